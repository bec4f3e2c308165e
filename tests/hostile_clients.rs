//! Clients that try to hold the node: slow request heads (slowloris), idle
//! kept-alive connections, stalled bodies, oversized heads, connection floods and
//! HTTP/2 rapid resets. Each is cut or refused by the limits of `ember serve`,
//! counted in /metrics, and a well-behaved client on 127.0.0.1 is answered by the
//! ingress and the API throughout. Attackers bind to other loopback addresses
//! (127.0.0.2 and up), so that the per-address limit is theirs alone.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::StatusCode;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from `from` (any port).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(to).await
}

/// Opens a connection that sends a request line and one header, then nothing;
/// `None` when the runtime closed it at once (refused) or it could not connect.
async fn slowloris(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let mut stream = connect_from(from, to).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: hello.ember.localhost\r\nX-Slow: 1\r\n")
        .await
        .ok()?;
    Some(stream)
}

/// Whether the peer has not closed `stream`, as far as can be told without waiting.
fn still_open(stream: &TcpStream) -> bool {
    match stream.try_read(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Whether the peer has closed `stream` (a read ends or fails) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// The open descriptors and resident memory (bytes) of process `pid`.
fn descriptors_and_memory(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (fds, rss_kib * 1024)
}

/// Checks, every 50 ms until `stop`, that the ingress and the API answer a client
/// on 127.0.0.1; returns the failures seen.
fn keep_checking(ember: &Ember, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let ingress = ember.ingress_client("hello");
    let ingress_url = ember.ingress_url("hello", "/");
    let api_url = ember.api_url("/v1/containers");
    let token = ember.token.clone();
    tokio::spawn(async move {
        let api = reqwest::Client::new();
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match ingress
                .get(&ingress_url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::OK => {}
                Ok(r) => failures.push(format!("ingress: {}", r.status())),
                Err(e) => failures.push(format!("ingress: {e}")),
            }
            match api
                .get(&api_url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::OK => {}
                Ok(r) => failures.push(format!("api: {}", r.status())),
                Err(e) => failures.push(format!("api: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failures
    })
}

async fn with_hello(flags: &[&str]) -> (tempfile::TempDir, Ember) {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), flags);
    ember
        .deploy_wasm("hello", &fixtures::hello("hi\n"), json!({}))
        .await;
    (dir, ember)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_slow_connections_from_two_addresses_leave_the_node_answering() {
    let (_dir, ember) = with_hello(&["--header-read-timeout", "3"]).await;
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    let baseline = descriptors_and_memory(ember.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let checker = keep_checking(&ember, stop.clone());

    // Two attackers, 10,000 attempts each, on the ingress and the API alike.
    let attack = |from: &'static str, to: SocketAddr| {
        tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            for attempt in 0..5_000 {
                if let Some(stream) = slowloris(from, to).await {
                    held.push(stream);
                }
                // Let go of those the runtime closed, as a real attacker would
                // (and to stay within this process's own descriptors).
                if attempt % 250 == 249 {
                    held.retain(still_open);
                }
            }
            held
        })
    };
    let attackers = [
        attack("127.0.0.2", ember.ingress),
        attack("127.0.0.2", ember.api),
        attack("127.0.0.3", ember.ingress),
        attack("127.0.0.3", ember.api),
    ];
    let mut held = Vec::new();
    for attacker in attackers {
        held.extend(attacker.await.unwrap());
    }
    // Each address holds its 256 on each listener at most; the rest were closed
    // at once.
    let mut open = Vec::new();
    for mut stream in held {
        if !closed_within(&mut stream, Duration::from_millis(1)).await {
            open.push(stream);
        }
    }
    assert!(open.len() <= 4 * 256, "{} held", open.len());
    let refused = ember
        .metric("ember_connections_refused_total{listener=\"ingress\",reason=\"per_source\"}")
        .await;
    assert!(refused >= 5_000.0, "{refused}");

    // Those held are cut by the header read timeout.
    let began = Instant::now();
    for mut stream in open {
        assert!(
            closed_within(&mut stream, Duration::from_secs(20)).await,
            "a connection whose head never ended was kept open"
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let failures = checker.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let cut = ember
        .metric("ember_connections_cut_total{listener=\"ingress\",reason=\"header_timeout\"}")
        .await;
    assert!(cut >= 256.0, "{cut}");
    let cut = ember
        .metric("ember_connections_cut_total{listener=\"api\",reason=\"header_timeout\"}")
        .await;
    assert!(cut >= 256.0, "{cut}");

    // Descriptors and memory return to where they were.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (fds, rss) = descriptors_and_memory(ember.pid());
        if fds <= baseline.0 + 16 && rss <= baseline.1 + 64 * 1024 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors {fds} (baseline {}), memory {rss} (baseline {})",
            baseline.0,
            baseline.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_slow_heads_held_at_once_are_all_cut_within_the_timeout() {
    let (_dir, ember) = with_hello(&[
        "--header-read-timeout",
        "5",
        "--max-connections-per-source",
        "100000",
    ])
    .await;
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    let (_, memory_before) = descriptors_and_memory(ember.pid());
    let mut held = Vec::new();
    for _ in 0..3_000 {
        held.push(slowloris("127.0.0.2", ember.ingress).await.unwrap());
    }
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    let open = ember
        .metric("ember_connections_open{listener=\"ingress\"}")
        .await;
    // Most are still open (the first may have been cut while the last connected).
    assert!(open >= 2_000.0, "{open}");
    for mut stream in held {
        assert!(closed_within(&mut stream, Duration::from_secs(20)).await);
    }
    let cut = ember
        .metric("ember_connections_cut_total{listener=\"ingress\",reason=\"header_timeout\"}")
        .await;
    assert!(cut >= 3_000.0, "{cut}");
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    // What the connections took is handed back, not kept by the allocator (about
    // 17 MB of it stayed in runs on the 2-core VM; where, was not traced).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, memory) = descriptors_and_memory(ember.pid());
        if memory <= memory_before + 24 * 1024 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memory {memory} stayed above {memory_before}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed_after_the_idle_timeout() {
    let (_dir, ember) = with_hello(&[
        "--idle-connection-timeout",
        "2",
        "--header-read-timeout",
        "30",
        "--max-connections-per-source",
        "1000",
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        let mut stream = connect_from("127.0.0.2", ember.ingress).await.unwrap();
        stream
            .write_all(b"GET /.well-known/ember/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(stream);
    }
    let began = Instant::now();
    for mut stream in idle {
        assert!(closed_within(&mut stream, Duration::from_secs(20)).await);
    }
    // Not by the header timeout (30 s): by the idle one.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    let cut = ember
        .metric("ember_connections_cut_total{listener=\"ingress\",reason=\"idle\"}")
        .await;
    assert!(cut >= 500.0, "{cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut() {
    let (_dir, ember) = with_hello(&["--body-stall-timeout", "2"]).await;
    for (listener, to, path) in [
        ("api", ember.api, "/v1/containers"),
        ("ingress", ember.ingress, "/"),
    ] {
        let mut stream = connect_from("127.0.0.2", to).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: hello.ember.localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
            ember.token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let began = Instant::now();
        assert!(closed_within(&mut stream, Duration::from_secs(20)).await);
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{listener}: {:?}",
            began.elapsed()
        );
    }
    let cut = ember
        .metric("ember_connections_cut_total{listener=\"api\",reason=\"body_stall\"}")
        .await;
    assert!(cut >= 1.0, "{cut}");
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let (_dir, ember) = with_hello(&[]).await;
    let big_header = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    for to in [ember.ingress, ember.api] {
        for extra in [&big_header, &many_headers] {
            let mut stream = connect_from("127.0.0.2", to).await.unwrap();
            let request = format!("GET / HTTP/1.1\r\nHost: hello.ember.localhost\r\n{extra}\r\n");
            // The runtime may answer and close before it has read everything.
            let _ = stream.write_all(request.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 431"),
                "{to}: {}",
                answer.lines().next().unwrap_or("")
            );
        }
    }
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_total_limit_are_refused_at_once_and_counted() {
    let (_dir, ember) = with_hello(&["--max-connections", "50"]).await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = connect_from("127.0.0.4", ember.ingress).await {
            streams.push(stream);
        }
    }
    let mut refused_at_once = 0;
    for stream in &mut streams {
        if closed_within(stream, Duration::from_millis(200)).await {
            refused_at_once += 1;
        }
    }
    assert!(refused_at_once >= 150, "{refused_at_once} refused");
    let refused = ember
        .metric("ember_connections_refused_total{listener=\"ingress\",reason=\"total\"}")
        .await;
    assert!(refused >= 150.0, "{refused}");
    // The API has limits of its own: it answered the metrics meanwhile. Once the
    // flood lets go, the ingress answers again.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = ember
            .ingress_client("hello")
            .get(ember.ingress_url("hello", "/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if answered {
            break;
        }
        assert!(Instant::now() < deadline, "the ingress did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_served_and_a_rapid_reset_flood_harms_no_one_else() {
    let (_dir, ember) = with_hello(&[]).await;
    // A request over HTTP/2 (prior knowledge, as h2c clients do).
    assert_eq!(h2_get(ember.ingress).await, "hi\n");

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, as fast
    // as the client can.
    let stream = connect_from("127.0.0.2", ember.ingress).await.unwrap();
    let (mut send, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(5) && sent < 50_000 {
        let Ok(ready) = send.clone().ready().await else {
            break;
        };
        send = ready;
        let request = http::Request::get("http://hello.ember.localhost/")
            .body(())
            .unwrap();
        let Ok((_, mut stream)) = send.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The runtime answers others meanwhile and after.
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    driver.abort();
    assert_eq!(h2_get(ember.ingress).await, "hi\n");

    // The API speaks HTTP/2 as well, under the same limits.
    let stream = TcpStream::connect(ember.api).await.unwrap();
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get(format!("http://{}/v1/containers", ember.api))
        .header("authorization", format!("Bearer {}", ember.token))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    driver.abort();
}

/// GET `hello` over a new HTTP/2 connection; returns the body of a 200.
async fn h2_get(ingress: SocketAddr) -> String {
    let stream = TcpStream::connect(ingress).await.unwrap();
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get("http://hello.ember.localhost/")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    driver.abort();
    String::from_utf8(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_sheds_load_when_descriptors_run_short_and_recovers_by_itself() {
    let (_dir, ember) = with_hello(&[
        "--max-connections-per-source",
        "100000",
        "--max-connections",
        "100000",
        "--header-read-timeout",
        "30",
    ])
    .await;
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    // A tight open files limit, set from outside as a service manager would: the
    // ingress sheds load at 90% of it.
    let (baseline, _) = descriptors_and_memory(ember.pid());
    let limit = baseline + 500;
    let set = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &ember.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(set.success());
    let mut held = Vec::new();
    for _ in 0..470 {
        held.push(slowloris("127.0.0.2", ember.ingress).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ember.metric("ember_overloaded").await != 1.0 {
        assert!(Instant::now() < deadline, "never shed load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new ingress connection is closed at once; the API answers.
    let refused = ember
        .ingress_client("hello")
        .get(ember.ingress_url("hello", "/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let overload = ember
        .metric("ember_connections_refused_total{listener=\"ingress\",reason=\"overload\"}")
        .await;
    assert!(overload >= 1.0, "{overload}");
    // Once the flood lets go, the ingress serves again by itself.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let served = ember
            .ingress_client("hello")
            .get(ember.ingress_url("hello", "/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if served {
            break;
        }
        assert!(Instant::now() < deadline, "the ingress did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ember.metric("ember_overloaded").await, 0.0);
}

/// One HTTP/2 frame: its 9-byte header and `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_continuation_flood_is_cut_and_harms_no_one_else() {
    let (_dir, ember) = with_hello(&[]).await;
    let (_, memory_before) = descriptors_and_memory(ember.pid());
    let mut stream = connect_from("127.0.0.2", ember.ingress).await.unwrap();
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the
    // header block: literal headers without indexing, 16 KiB a frame.
    opening.extend(h2_frame(0x1, 0x1, 1, &[0x82])); // END_STREAM, :method GET
    stream.write_all(&opening).await.unwrap();
    let mut block = Vec::new();
    while block.len() < 16 * 1024 - 140 {
        block.extend_from_slice(&[0x00, 0x05]);
        block.extend_from_slice(b"x-abc");
        block.push(0x7f);
        block.push(0x00); // value length 127
        block.extend_from_slice(&[b'v'; 127]);
    }
    let continuation = h2_frame(0x9, 0, 1, &block);
    let mut sent = 0usize;
    let mut cut = false;
    for _ in 0..1024 {
        if stream.write_all(&continuation).await.is_err() {
            cut = true;
            break;
        }
        sent += continuation.len();
    }
    // The runtime closes the connection (after a GOAWAY) rather than buffer it all.
    if !cut {
        cut = closed_within(&mut stream, Duration::from_secs(10)).await;
    }
    assert!(cut, "{sent} bytes of one header block were taken");
    assert_eq!(ember.invoke("hello").await.0, StatusCode::OK);
    let (_, memory_after) = descriptors_and_memory(ember.pid());
    assert!(
        memory_after < memory_before + 32 * 1024 * 1024,
        "memory grew from {memory_before} to {memory_after}"
    );
}
