"""A wasi:http component in Python: streams the request body back.

Answers `<GREETING> <METHOD> <PATH>\n` followed by the request body, read and
written a chunk at a time so large bodies stream both ways. GREETING comes from
the container's environment (default "echo").

`GET /outbound` instead tries an outgoing HTTP request to 127.0.0.1:9 and says
whether the runtime allowed it (Ember denies guests outbound network by default).
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
