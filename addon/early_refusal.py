"""Refuse a request whose large body is still arriving, without reading that body.

mitmproxy reads a request's whole body before it sends a response an addon has set, so a
refused multi-GiB upload would first be buffered in memory: one unauthenticated client could
exhaust the proxy. Instead the refused flow is pointed at a host that cannot exist, its body is
streamed into nothing, and its connection attempt is failed in `server_connect` with the
refusal as the message. addon/errorpage.py turns that message into the problem, and mitmproxy
answers at once and closes the HTTP/1 connection without reading the rest of the body.
"""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from addon import errorpage
from addon.problems import Refusal

# Bodies up to this size are simply read and dropped: cheaper than a closed connection.
SMALL_BODY = 64 * 1024
_HOST_SUFFIX = ".refused.keyrelay.invalid"


def _discard(_chunk: bytes) -> Iterable[bytes]:
    return ()


class EarlyRefusals:
    def __init__(self) -> None:
        self._pending: dict[str, str] = {}  # sentinel host -> errorpage message

    def divert(self, flow: http.HTTPFlow, refusal: Refusal) -> bool:
        """requestheaders: True when the refusal is sent without reading a large body."""
        request = flow.request
        if request.is_http2 or request.is_http3 or not _large_body_pending(request):
            return False  # multiplexed streams are answered the usual way
        host = f"{flow.id}{_HOST_SUFFIX}"
        self._pending[host] = errorpage.message(refusal.status, refusal.reason, refusal.detail)
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

    def forget(self, flow: http.HTTPFlow) -> None:
        """response / error: a diverted flow that never tried to connect leaves nothing."""
        self._pending.pop(flow.request.host, None)


def _large_body_pending(request: http.Request) -> bool:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return True
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) > SMALL_BODY
