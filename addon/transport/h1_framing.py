"""Frame the body of an HTTP/2 (or HTTP/3) request that goes to an HTTP/1 upstream.

An HTTP/2 request needs no content-length: its stream ends the body. mitmproxy converts such
a request to HTTP/1.1 for an HTTP/1 upstream but adds no framing, so the upstream read the
body as the next request on the connection: a request without the key, yet past keyrelay's
auth, limits and allowlists. This wraps `Http1Client.send`: a converted request with a body
(its head does not end the message) and neither content-length nor transfer-encoding goes
`transfer-encoding: chunked`, which mitmproxy's HTTP/1 client then encodes chunk by chunk.

This reaches into mitmproxy's internals, through addon/engine: on a mitmproxy version it was
not checked against the wrapper is not installed, and start-up stops unless
keyrelay_unprotected.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import HttpEvent, RequestHeaders

from addon import engine

_original = _http1.Http1Client.send


def send(self: _http1.Http1Client, event: HttpEvent) -> Generator[commands.Command, Any, None]:
    if isinstance(event, RequestHeaders) and not event.end_stream:
        request = event.request
        headers = request.headers
        if (request.is_http2 or request.is_http3) and (
            "content-length" not in headers and "transfer-encoding" not in headers
        ):
            headers["transfer-encoding"] = "chunked"
    yield from _original(self, event)


def install() -> bool:
    return engine.replace(_http1.Http1Client, "send", send, "h1_framing")
