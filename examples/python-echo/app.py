"""A wasi:http component in Python: streams the request body back.

Answers `<GREETING> <METHOD> <PATH>\n` followed by the request body, read and
written a chunk at a time so large bodies stream both ways. GREETING comes from
the container's environment (default "echo").
"""

import os

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
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
