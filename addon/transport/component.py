"""Transport fidelity on flows: what to stream, the request size limit, timeouts, and a response
head that tells the truth about the bytes that follow (hop-by-hop headers, SSE anti-buffering,
content-encoding). The decisions are in plan.py; the settings in addon/config/transport.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mitmproxy import http, tls
from mitmproxy.connection import Server
from mitmproxy.proxy import server_hooks

from addon import header_index
from addon.config.credential import KEYRELAY_PROTOCOL, WEBSOCKET_PROTOCOLS, protocols
from addon.config.transport import TransportSpec
from addon.flowlocal import FlowLocal
from addon.problems import Refusal
from addon.routing.forwarding import HOP_BY_HOP
from addon.routing.router import Route
from addon.transport import decoding
from addon.transport.plan import (
    BodyLimit,
    Pipe,
    ResponsePlan,
    Stage,
    plan_response,
    request_plan,
)
from addon.transport.timeouts import Clock

_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)

# `connection` and framing stay: mitmproxy's HTTP/1 layer reads this same response object to
# frame the body and to decide whether the upstream connection is reusable.
_KEPT = frozenset({b"connection", b"close", b"transfer-encoding"})


def fix_head(response: http.Response, plan: ResponsePlan, *, http1_client: bool) -> None:
    """Make the head true for the bytes the client will get."""
    headers = response.headers
    if response.status_code != 101 and _drops_any(header_index.index(headers)):
        fields = headers.fields  # names and values as bytes: filtered in one pass
        named = {
            token.strip().lower()
            for name, value in fields
            if name.lower() == b"connection"
            for token in value.split(b",")
        }
        drop = (_HOP_BY_HOP | named) - _KEPT
        kept = tuple(field for field in fields if field[0].lower() not in drop)
        if len(kept) != len(fields):
            headers.fields = kept
    if is_event_stream(headers):
        # Tell nginx and other intermediaries in front of keyrelay not to buffer the stream.
        headers["x-accel-buffering"] = "no"
        cache = headers.get("cache-control", "").lower()
        if "no-cache" not in cache and "no-store" not in cache:
            headers["cache-control"] = "no-cache"
    removed_length = False
    if plan.decode and plan.stream:  # a buffered body is decoded whole later (decode_buffered)
        removed_length = headers.pop("content-length", None) is not None
        headers.pop("content-encoding", None)
    # An HTTP/1.1 client needs framing to see where the body ends without the connection closing:
    # chunked, when the length is gone or an HTTP/2 upstream sent none. Not when the upstream
    # delimited the body by closing: mitmproxy reads this same object and must keep doing so.
    if (
        plan.stream
        and http1_client
        and "content-length" not in headers
        and "transfer-encoding" not in headers
        and (removed_length or response.is_http2 or response.is_http3)
    ):
        headers["transfer-encoding"] = "chunked"


def is_event_stream(headers: http.Headers) -> bool:
    """Whether a head announces Server-Sent Events."""
    content_type = header_index.lookup(headers)("content-type") or ""
    return content_type.lower().startswith("text/event-stream")


_WHOLE: FlowLocal[bool] = FlowLocal("transport.whole")
_ANSWER_WHOLE: FlowLocal[bool] = FlowLocal("transport.answer_whole")


def read_answer_whole(flow: http.HTTPFlow) -> None:
    """A step of responseheaders, before transport's, reads the answer whole in `response` (a
    created object's id, a pool key's 401/429): it is buffered, not streamed."""
    _ANSWER_WHOLE.set(flow, True)


def keep_whole(flow: http.HTTPFlow) -> None:
    """A step of requestheaders reads the body whole in `request` (body rules, ownership, a
    budget): declared, not set, so that what goes upstream is decided once (decide_body)."""
    _WHOLE.set(flow, True)


def add_stage(response: http.Response, name: str, stage: Stage) -> None:
    """Add a named stage to the streamed body's pipe (plan.STAGES says where it runs). A body
    streamed without one (not routed here: a test, a replay) gets one first."""
    pipe = response.stream
    if not isinstance(pipe, Pipe):
        inner = pipe if callable(pipe) else None
        pipe = Pipe(_joined(inner) if inner else None, _nothing)
        response.stream = pipe
    pipe.add(name, stage)


def _joined(inner: Callable[[bytes], bytes | Iterable[bytes]]) -> Callable[[bytes], bytes]:
    def call(chunk: bytes) -> bytes:
        out = inner(chunk)
        return out if isinstance(out, bytes) else b"".join(out)

    return call


def _nothing() -> None:
    pass


def _drops_any(index: dict[str, str]) -> bool:
    """Whether the head holds a hop-by-hop field, or one its Connection header names: most
    answers (`connection: keep-alive` alone) hold none, and their fields are left as they are."""
    named = {token.strip().lower() for token in index.get("connection", "").split(",")}
    return not ((_HOP_BY_HOP_NAMES | named) - _KEPT_NAMES).isdisjoint(index)


_HOP_BY_HOP_NAMES = frozenset(HOP_BY_HOP)
_KEPT_NAMES = frozenset(name.decode() for name in _KEPT)


def decode_buffered(response: http.Response) -> None:
    """Decode a whole (buffered) body and fix its length. A corrupt body is left as sent,
    still labelled with its encoding: true bytes, honestly described."""
    encoding = header_index.lookup(response.headers)("content-encoding")
    if not (decoding.codings(encoding) and decoding.can_decode(encoding)):
        return
    assert encoding is not None
    try:
        body = decoding.decode_all(encoding, response.raw_content or b"")
    except decoding.DecodeError:
        return
    response.headers.pop("content-encoding", None)
    response.content = body  # sets content-length unless the body is chunked


# -- the hooks -----------------------------------------------------------------------------------


def websocket_open(flow: http.HTTPFlow) -> bool:
    """A WebSocket whose handshake is done and whose socket is still open: mitmproxy runs
    `response` on its 101 long before `websocket_end` (the one hook that sees `timestamp_end`)."""
    return flow.websocket is not None and flow.websocket.timestamp_end is None


class Transport:
    """Streaming, decoding, the size limit and timeouts, per flow."""

    def __init__(self) -> None:
        self.clock = Clock()
        self._flows: FlowLocal[TransportSpec] = FlowLocal("transport.flows")
        self._streamed: FlowLocal[BodyLimit] = FlowLocal("transport.streamed")
        # WebSockets whose client offered keyrelay's own protocol (its credential beside it).
        self._our_protocol: FlowLocal[bool] = FlowLocal("transport.our_protocol")
        self._offer_h2: dict[tuple[str, str, int], bool] = {}  # (client id, host, port)

    def requestheaders(self, flow: http.HTTPFlow, route: Route) -> Refusal | None:
        """After routing, before the rest of requestheaders (whose steps may declare that they
        read the body whole: `keep_whole`; `decide_body` then settles it). A refusal is the
        caller's to answer."""
        request, provider = flow.request, route.provider
        transport = provider.transport
        header = header_index.lookup(request.headers)
        plan = request_plan(provider.name, transport, header("content-length"))
        if isinstance(plan, Refusal):
            return plan
        connection = (flow.client_conn.id, route.host.lower(), route.port)
        self._flows.set(flow, transport)
        self.clock.routed(flow, connection, provider.name, transport.timeouts)
        # A WebSocket handshake needs HTTP/1.1: HTTP/2 has no Upgrade.
        websocket = header_index.asks_for_websocket(request.headers)
        self._offer_h2[connection] = transport.upstream_http2 and not websocket
        if websocket and KEYRELAY_PROTOCOL in protocols(header(WEBSOCKET_PROTOCOLS)):
            self._our_protocol.set(flow, True)
        if plan:
            limit = BodyLimit(
                transport.max_request_bytes,
                lambda: self.clock.abort(
                    flow, f"request body over {transport.max_request_bytes} bytes, cut"
                ),
            )
            self._streamed.set(flow, limit)
        return None

    def decide_body(self, flow: http.HTTPFlow) -> None:
        """The end of requestheaders, once: the body is kept whole if any step declared that it
        reads it (keep_whole), else streamed within its size limit where the plan said so."""
        limit = self._streamed.pop(flow)
        if _WHOLE.pop(flow):
            flow.request.stream = False
        elif limit is not None:
            flow.request.stream = limit

    def _broken(self, flow: http.HTTPFlow, why: str) -> None:
        """The stream cannot go on truthfully: end it so the client sees it was cut. Without
        chunked framing, mitmproxy sends no last chunk and closes the HTTP/1 connection."""
        if flow.response is not None:
            flow.response.headers.pop("transfer-encoding", None)
        self.clock.abort(flow, why)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow in self._flows:
            self.clock.request_sent(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        transport = self._flows.get(flow)
        response = flow.response
        if transport is None or response is None:
            return
        chunk_arrived = self.clock.response_started(flow)
        status = response.status_code
        if self._our_protocol.pop(flow) and status == 101:
            # The upstream never saw keyrelay's protocol; a browser fails a socket whose answer
            # names none of those it offered.
            response.headers.setdefault(WEBSOCKET_PROTOCOLS, KEYRELAY_PROTOCOL)
        has_body = flow.request.method != "HEAD" and status >= 200 and status not in (204, 304)
        # Folded and lower-cased once (header_index): budget and CORS read the same index.
        fields = header_index.index(response.headers).items()
        plan = plan_response(transport, status, fields, has_body=has_body)
        if _ANSWER_WHOLE.pop(flow) and plan.stream:
            plan = ResponsePlan(stream=False, decode=plan.decode)  # decoded whole in `response`
        fix_head(response, plan, http1_client=flow.request.http_version == "HTTP/1.1")
        if plan.stream:
            decoder = None
            if plan.decode:
                decoder = decoding.Decoder(plan.decode, lambda why: self._broken(flow, why))
            response.stream = Pipe(decoder, chunk_arrived)

    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if flow in self._flows and response is not None and not response.stream:
            decode_buffered(response)
        self.error(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        """error / websocket_end (and the end of `response`): the flow is over."""
        if websocket_open(flow):
            return  # the idle timer keeps watching the socket until websocket_end
        self._flows.pop(flow)
        self._streamed.pop(flow)  # refused before its body was decided
        self._our_protocol.pop(flow)
        _WHOLE.pop(flow)
        _ANSWER_WHOLE.pop(flow)
        if connection := self.clock.finished(flow):
            self._offer_h2.pop(connection, None)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Before connect_to's rewrite: the address is still the provider's."""
        server = data.server
        if server.address:
            offer = self._offer_h2.pop(
                (data.client.id, server.address[0].lower(), server.address[1]), None
            )
            if server.tls and not server.alpn_offers and offer is not None:
                # mitmproxy mirrors the client's ALPN (none for plain HTTP/1 clients): offer h2.
                server.alpn_offers = (b"h2", b"http/1.1") if offer else (b"http/1.1",)
        self.clock.connecting(data)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        """server_connected / server_connect_error: TCP is done. An https upstream is ready
        only after its handshake (`tls_done`)."""
        if not data.server.tls or data.server.error:
            self.clock.connected(data.server)

    def expired(self, flow: http.HTTPFlow) -> Refusal | None:
        """error: what the flow's error page says when a timeout closed its connection."""
        return self.clock.expired(flow)

    def tls_done(self, data: tls.TlsData) -> None:
        """tls_established_server / tls_failed_server."""
        if isinstance(data.conn, Server):
            self.clock.connected(data.conn)
