"""A wasi:http component in Python: streams the request body back.

Answers `<GREETING> <METHOD> <PATH>\n` followed by the request body, read and
written a chunk at a time so large bodies stream both ways. GREETING comes from
the container's environment (default "echo").

`GET /outbound` instead tries an outgoing HTTP request to 127.0.0.1:9 and says
whether the runtime allowed it (Ember denies guests outbound network by default).
`GET /fetch?url=http://host:port/path` sends a GET there and answers
`fetched <status>: <body>`, or `denied <error>` when the runtime refused it (a
container lists the hosts its guests may call in `allowedOutboundHosts`).

`GET /escape` tries, as a hostile guest would, to reach what is outside its
sandbox (host files, the host's environment, sockets, processes) and answers one
line per attempt: `<what>: refused <why>` or `<what>: ALLOWED <what it got>`.
"""

import os

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)

# blocking-write-and-flush takes at most 4096 bytes per call.
CHUNK = 4096


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        method = method.value if isinstance(method, Method_Other) else type(method).__name__.split("_")[-1].upper()
        path = request.path_with_query() or "/"
        body = request.consume()
        incoming = body.stream()

        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        outgoing_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        greeting = os.environ.get("GREETING", "echo")
        # Goes to the container's logs, as a container's stdout does.
        print(f"served {method} {path}", flush=True)
        if path == "/escape":
            with outgoing_body.write() as out:
                for line in escape_attempts():
                    out.blocking_write_and_flush(f"{line}\n".encode())
            OutgoingBody.finish(outgoing_body, None)
            return
        if path.startswith("/fetch?url="):
            with outgoing_body.write() as out:
                out.blocking_write_and_flush(f"{fetch(path[len('/fetch?url='):])}\n".encode())
            OutgoingBody.finish(outgoing_body, None)
            return
        if path == "/outbound":
            with outgoing_body.write() as out:
                out.blocking_write_and_flush(f"outbound: {try_outbound()}\n".encode())
            OutgoingBody.finish(outgoing_body, None)
            return
        # The output stream must be dropped (leaving the `with`) before the body is finished.
        with outgoing_body.write() as out:
            out.blocking_write_and_flush(f"{greeting} {method} {path}\n".encode())
            while True:
                try:
                    chunk = incoming.blocking_read(CHUNK)
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
                if chunk:
                    out.blocking_write_and_flush(chunk)
        OutgoingBody.finish(outgoing_body, None)


def fetch(url: str) -> str:
    """GETs `url` through the outgoing handler; says what came back."""
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Https() if scheme == "https" else Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query("/" + path)
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        return f"denied {type(e.value).__name__}"
    with future.subscribe() as pollable:
        pollable.block()
    result = future.get()
    if not (isinstance(result, Ok) and isinstance(result.value, Ok)):
        error = result.value.value if isinstance(result, Ok) else result.value
        return f"denied {type(error).__name__}"
    response = result.value.value
    status = response.status()
    data = b""
    with response.consume() as body:
        with body.stream() as stream:
            while True:
                try:
                    data += stream.blocking_read(CHUNK)
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
    return f"fetched {status}: {data.decode().strip()}"


def try_outbound() -> str:
    """Sends a request to a closed loopback port; reports what the host said."""
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Http())
    request.set_authority("127.0.0.1:9")
    request.set_path_with_query("/")
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        return f"denied {type(e.value).__name__}"
    with future.subscribe() as pollable:
        pollable.block()
    result = future.get()
    if isinstance(result, Ok) and isinstance(result.value, Ok):
        return "allowed"
    error = result.value.value if isinstance(result, Ok) else result.value
    return f"denied {type(error).__name__}"


def escape_attempts():
    """Each way out a hostile guest might try, and what happened."""

    def attempt(what, action):
        try:
            got = action()
        except BaseException as e:  # noqa: BLE001 - any refusal is the answer
            return f"{what}: refused {type(e).__name__}"
        if got in (None, "", [], b""):
            return f"{what}: refused (nothing)"
        return f"{what}: ALLOWED {str(got)[:80]!r}"

    def read(path):
        with open(path, "rb") as f:
            return f.read(64)

    def connect(port):
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.getpeername()

    def run(command):
        import subprocess

        return subprocess.run(command, capture_output=True).stdout

    host_env = [k for k in os.environ if k not in ("GREETING", "PORT")]
    return [
        attempt("read /etc/passwd", lambda: read("/etc/passwd")),
        attempt("read /proc/self/environ", lambda: read("/proc/self/environ")),
        attempt("list /", lambda: os.listdir("/")),
        attempt("write /tmp", lambda: open("/tmp/x", "w").write("x")),
        attempt("host environment", lambda: host_env),
        attempt("connect to the host", lambda: connect(22)),
        attempt("run a process", lambda: run(["/bin/sh", "-c", "id"])),
        attempt("fork", lambda: os.fork()),
    ]

