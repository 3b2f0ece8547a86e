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

from collections.abc import Iterable

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from addon import errorpage
from addon.flowlocal import FlowLocal
from addon.problems import Refusal

# Bodies up to this size are simply read and dropped: cheaper than a closed connection.
SMALL_BODY = 64 * 1024
_HOST_SUFFIX = ".refused.keyrelay.invalid"
Diverted = tuple[list[tuple[str, str]], errorpage.Page]  # a refusal's headers, and its page
_PAGE_HEADERS = frozenset({"content-type", "content-length"})  # the error page sets its own


def _discard(_chunk: bytes) -> Iterable[bytes]:
    return ()


class EarlyRefusals:
    def __init__(self) -> None:
        self._pending: dict[str, str] = {}  # sentinel host -> the connect error mitmproxy reports
        # A diverted refusal's headers and page; its answer while the body's length is unknown.
        self._diverted: FlowLocal[Diverted] = FlowLocal("early.diverted")
        self._held: FlowLocal[http.Response] = FlowLocal("early.held")

    def divert(self, flow: http.HTTPFlow, refusal: Refusal | None) -> bool:
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
        # The connection fails, and the flow's error page is the refusal, handed over as a value
        # (`diverted`); an answer here that is no refusal fails closed as one.
        own = refusal or Refusal(response.status_code, "refused", "keyrelay refused this request")
        self._pending[host] = f"keyrelay refused this request ({own.status} {own.reason})"
        headers = [
            (name, value)
            for name, value in response.headers.items(multi=True)
            if name.lower() not in _PAGE_HEADERS
        ]
        self._diverted.set(flow, (headers, errorpage.page(own)))
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

    def diverted(self, flow: http.HTTPFlow) -> Diverted | None:
        """error: this flow's diverted refusal, its headers and page, for its error page (None
        when the flow was not diverted)."""
        return self._diverted.pop(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        """The whole request arrived without a stream (its HTTP/2 stream had ended with the
        head, or it was small): the held answer goes out as it would have."""
        if (response := self._held.pop(flow)) is not None:
            self._pending.pop(flow.request.host, None)
            self._diverted.pop(flow)
            flow.response = response

    def response(self, flow: http.HTTPFlow) -> None:
        """A diverted flow that never tried to connect leaves nothing behind."""
        self._pending.pop(flow.request.host, None)
        self._diverted.pop(flow)
        self._held.pop(flow)

    error = response


def _large_body_pending(request: http.Request) -> bool:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return True
    length = request.headers.get("content-length", "")
    return length.isascii() and length.isdigit() and int(length) > SMALL_BODY
