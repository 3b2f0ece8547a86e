"""Refuse a request whose large body is still arriving, without reading that body.

mitmproxy reads a request's whole body before it sends a response an addon has set, so a
refused multi-GiB upload would first be buffered in memory: one unauthenticated client could
exhaust the proxy. Instead the refused flow is pointed at a host that cannot exist, its body is
streamed into nothing, and its connection attempt is failed in `server_connect` with the
refusal as the message. addon/errorpage.py turns that message into the problem, with the
refusal's own headers (CORS, Retry-After: `answer_headers`), and mitmproxy answers at once and
closes the HTTP/1 connection without reading the rest of the body.

An HTTP/2 (or HTTP/3) request without content-length may have a body of any size, or none:
mitmproxy does not say whether its stream has ended. It is diverted too, and its answer held:
if the stream had ended, mitmproxy calls `request` at once, and the answer goes out as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from addon import errorpage
from addon.flowlocal import FlowLocal

# Bodies up to this size are simply read and dropped: cheaper than a closed connection.
SMALL_BODY = 64 * 1024
_HOST_SUFFIX = ".refused.keyrelay.invalid"
_PAGE_HEADERS = frozenset({"content-type", "content-length"})  # the error page sets its own


def _discard(_chunk: bytes) -> Iterable[bytes]:
    return ()


class EarlyRefusals:
    def __init__(self) -> None:
        self._pending: dict[str, str] = {}  # sentinel host -> errorpage message
        # A diverted refusal's headers, and its answer while the body's length is unknown.
        self._headers: FlowLocal[list[tuple[str, str]]] = FlowLocal("early.headers")
        self._held: FlowLocal[http.Response] = FlowLocal("early.held")

    def divert(self, flow: http.HTTPFlow) -> bool:
        """requestheaders, once keyrelay has answered: True when the answer goes out without
        reading a large body. Over HTTP/2 the status becomes mitmproxy's 502 (its error path
        fixes it), the problem inside still says what happened: memory is worth more."""
        request, response = flow.request, flow.response
        if response is None:
            return False
        unknown = (request.is_http2 or request.is_http3) and "content-length" not in request.headers
        if not unknown and not _large_body_pending(request):
            return False
        host = f"{flow.id}{_HOST_SUFFIX}"
        self._pending[host] = _message(response)
        self._headers.set(
            flow,
            [
                (name, value)
                for name, value in response.headers.items(multi=True)
                if name.lower() not in _PAGE_HEADERS
            ],
        )
        if unknown:
            self._held.set(flow, response)
        flow.response = None
        request.scheme, request.host, request.port = "https", host, 443
        request.stream = _discard
        return True

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> bool:
        """True when this connection belonged to a diverted refusal (now failed with it)."""
        address = data.server.address
        message = self._pending.pop(address[0], None) if address else None
        if message is None:
            return False
        data.server.error = message
        return True

    def answer_headers(self, flow: http.HTTPFlow) -> list[tuple[str, str]] | None:
        """error: the headers of this flow's diverted refusal, for its error page (None when
        the flow was not diverted)."""
        return self._headers.pop(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        """The whole request arrived without a stream (its HTTP/2 stream had ended with the
        head, or it was small): the held answer goes out as it would have."""
        if (response := self._held.pop(flow)) is not None:
            self._pending.pop(flow.request.host, None)
            self._headers.pop(flow)
            flow.response = response

    def response(self, flow: http.HTTPFlow) -> None:
        """A diverted flow that never tried to connect leaves nothing behind."""
        self._pending.pop(flow.request.host, None)
        self._headers.pop(flow)
        self._held.pop(flow)

    error = response


def _message(response: http.Response) -> str:
    """The answer as an errorpage message: keyrelay's answers here are problems."""
    try:
        problem = json.loads(response.content or b"")
        reason = str(problem["type"]).rpartition("/")[2]
        detail = str(problem["detail"])
    except (ValueError, KeyError, TypeError):
        reason, detail = "refused", "keyrelay refused this request"
    return errorpage.message(response.status_code, reason, detail)


def _large_body_pending(request: http.Request) -> bool:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return True
    length = request.headers.get("content-length", "")
    return length.isascii() and length.isdigit() and int(length) > SMALL_BODY
