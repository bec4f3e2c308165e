/* A WebSocket echo server for the tests' OCI images (RFC 6455): listens on $PORT
 * (8080 by default), one process per connection; text and binary messages come
 * back as they were sent, a ping gets its pong, a close is answered and ends the
 * connection. A request that asks for no upgrade gets "no websocket". Built
 * static by the tests (cc -static), so the image needs nothing else. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(m);
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = 0;
}

static int read_full(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    for (size_t put = 0; put < n;) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r <= 0) return -1;
        put += (size_t)r;
    }
    return 0;
}

static void serve(int fd) {
    char req[8192];
    size_t used = 0;
    req[0] = 0;
    while (!strstr(req, "\r\n\r\n")) {
        if (used >= sizeof req - 1) return;
        ssize_t n = read(fd, req + used, sizeof req - 1 - used);
        if (n <= 0) return;
        used += (size_t)n;
        req[used] = 0;
    }
    char *key = strcasestr(req, "Sec-WebSocket-Key:");
    if (!key) {
        const char *plain = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nno websocket\n";
        write_full(fd, plain, strlen(plain));
        return;
    }
    key += strlen("Sec-WebSocket-Key:");
    while (*key == ' ') key++;
    char *end = strstr(key, "\r\n");
    char joined[256];
    snprintf(joined, sizeof joined, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)(end - key), key);
    uint8_t digest[20];
    char accept[32];
    sha1((const uint8_t *)joined, strlen(joined), digest);
    base64(digest, 20, accept);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    if (write_full(fd, head, (size_t)n)) return;
    for (;;) {
        uint8_t h[2], mask[4] = {0}, ext[8];
        if (read_full(fd, h, 2)) return;
        int op = h[0] & 0x0f;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            if (read_full(fd, ext, 2)) return;
            len = (uint64_t)ext[0] << 8 | ext[1];
        } else if (len == 127) {
            if (read_full(fd, ext, 8)) return;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | ext[i];
        }
        if (len > (64u << 20)) return;
        if ((h[1] & 0x80) && read_full(fd, mask, 4)) return;
        uint8_t *p = malloc(len ? len : 1);
        if (read_full(fd, p, len)) return;
        for (uint64_t i = 0; i < len; i++) p[i] ^= mask[i % 4];
        if (op == 9) op = 10;
        uint8_t out[10];
        size_t hl;
        out[0] = (uint8_t)(0x80 | op);
        if (len < 126) { out[1] = (uint8_t)len; hl = 2; }
        else if (len < 65536) { out[1] = 126; out[2] = (uint8_t)(len >> 8); out[3] = (uint8_t)len; hl = 4; }
        else { out[1] = 127; for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i)); hl = 10; }
        if (write_full(fd, out, hl) || write_full(fd, p, len)) return;
        free(p);
        if (op == 8) return;
    }
}

int main(void) {
    const char *port = getenv("PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)(port ? atoi(port) : 8080));
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 128)) {
        perror("listening");
        return 1;
    }
    signal(SIGCHLD, SIG_IGN);
    printf("ws_echo listening on %s\n", port ? port : "8080");
    fflush(stdout);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            close(s);
            serve(c);
            _exit(0);
        }
        close(c);
    }
}
