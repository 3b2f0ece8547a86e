"""Transport fidelity: what to stream, the request size limit, and a response head that tells the
truth about the bytes that follow (hop-by-hop headers, SSE anti-buffering, content-encoding).

The `transport:` section of a provider (or of `defaults:`):

    transport:
      timeouts: {connect: 10, first_byte: 600, idle: 300}   # seconds, 0 = none
      max_request_bytes: 100 MiB     # larger requests get a 413 problem
      stream_requests_above: 1 MiB   # larger request bodies go upstream as they arrive
      buffer_responses_up_to: 1 MiB  # larger responses are streamed (streams always are)
      upstream_http2: true           # offer HTTP/2 upstream even to HTTP/1 clients
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from addon import decoding
from addon.config_node import Node
from addon.problems import Refusal
from addon.timeouts import Clock, Timeouts, parse_timeouts

if TYPE_CHECKING:  # routing imports rules, which imports this module
    from addon.routing import Route

MiB = 1024 * 1024

STREAMED_TYPES = ("text/event-stream", "application/x-ndjson", "audio/", "application/octet-stream")


@dataclass(frozen=True, slots=True)
class Transport:
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_request_bytes: int = 100 * MiB
    stream_requests_above: int = 1 * MiB
    buffer_responses_up_to: int = 1 * MiB
    upstream_http2: bool = True


_SIZE = re.compile(r"\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": MiB, "gb": 1000**3}
_UNITS["gib"] = 1024 * MiB


def parse_transport(node: Node | None) -> Transport:
    if node is None:
        return Transport()
    d = Transport()
    transport = Transport(
        timeouts=parse_timeouts(node.child("timeouts", None)),
        max_request_bytes=_size(node, "max_request_bytes", d.max_request_bytes),
        stream_requests_above=_size(node, "stream_requests_above", d.stream_requests_above),
        buffer_responses_up_to=_size(node, "buffer_responses_up_to", d.buffer_responses_up_to),
        upstream_http2=node.flag("upstream_http2", d.upstream_http2),
    )
    node.finish()
    return transport


def _size(node: Node, name: str, default: int) -> int:
    value = node.raw(name, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        node.fail("must be a byte count like 1048576 or '100 MiB'", name)
    return int(match[1]) * _UNITS[match[2].lower()]


# -- requests ------------------------------------------------------------------------------------


def request_plan(provider: str, transport: Transport, content_length: str | None) -> Refusal | bool:
    """From the request head alone: a 413 refusal, or whether to stream the body upstream.

    A body of unknown length (chunked, or HTTP/2 without content-length) is streamed, and
    counted against the limit as it goes (`BodyLimit`)."""
    if content_length is None:
        return True
    try:
        size = int(content_length)
    except ValueError:
        return False  # mitmproxy has already refused malformed lengths
    if size > transport.max_request_bytes:
        return too_large(provider, transport)
    return size > transport.stream_requests_above


def too_large(provider: str, transport: Transport) -> Refusal:
    return Refusal(
        413,
        "request-too-large",
        f"{provider} accepts request bodies up to {transport.max_request_bytes} bytes",
    )


class BodyLimit:
    """A `flow.request.stream` callable that passes chunks through until the limit is passed,
    then reports once and passes nothing more (the caller must cut the upstream connection
    at once, or the upstream would take a truncated body for a whole one)."""

    def __init__(self, limit: int, exceeded: Callable[[], None]) -> None:
        self.limit = limit
        self.seen = 0
        self._exceeded: Callable[[], None] | None = exceeded

    def __call__(self, chunk: bytes) -> list[bytes]:
        self.seen += len(chunk)
        if self.seen <= self.limit:
            return [chunk] if chunk else []  # an empty chunk would be HTTP/1's last chunk
        exceeded, self._exceeded = self._exceeded, None
        if exceeded:
            exceeded()
        return []


# -- responses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    stream: bool
    decode: str | None  # the content-encoding to undo, or None


def plan_response(
    transport: Transport,
    status: int,
    headers: Iterable[tuple[str, str]],
    *,
    has_body: bool,
) -> ResponsePlan:
    """Whether to stream and what to decode, from the upstream's status and headers (each
    field on its own or already folded: repeated names are folded as `Headers.get` does)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    encoding = fields.get("content-encoding")
    decode = encoding if decoding.codings(encoding) and decoding.can_decode(encoding) else None
    if status == 101 or not has_body:
        return ResponsePlan(stream=False, decode=None)
    content_type = fields.get("content-type", "").lower()
    length = fields.get("content-length")
    stream = (
        content_type.startswith(STREAMED_TYPES)
        or length is None
        or not length.isdigit()
        or int(length) > transport.buffer_responses_up_to
    )
    return ResponsePlan(stream=stream, decode=decode)


@functools.cache
def _hop_by_hop() -> frozenset[bytes]:
    # Imported here: forwarding imports rules, which imports this module.
    from addon.forwarding import HOP_BY_HOP

    return frozenset(name.encode() for name in HOP_BY_HOP)


# `connection` and framing stay: mitmproxy's HTTP/1 layer reads this same response object to
# frame the body and to decide whether the upstream connection is reusable.
_KEPT = frozenset({b"connection", b"close", b"transfer-encoding"})


def fix_head(response: http.Response, plan: ResponsePlan, *, http1_client: bool) -> None:
    """Make the head true for the bytes the client will get."""
    headers = response.headers
    if response.status_code != 101:
        fields = headers.fields  # names and values as bytes: filtered in one pass
        named = {
            token.strip().lower()
            for name, value in fields
            if name.lower() == b"connection"
            for token in value.split(b",")
        }
        drop = (_hop_by_hop() | named) - _KEPT
        kept = tuple(field for field in fields if field[0].lower() not in drop)
        if len(kept) != len(fields):
            headers.fields = kept
    if headers.get("content-type", "").lower().startswith("text/event-stream"):
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


def decode_buffered(response: http.Response) -> None:
    """Decode a whole (buffered) body and fix its length. A corrupt body is left as sent,
    still labelled with its encoding: true bytes, honestly described."""
    encoding = response.headers.get("content-encoding")
    if not (decoding.codings(encoding) and decoding.can_decode(encoding)):
        return
    assert encoding is not None
    try:
        body = decoding.decode_all(encoding, response.raw_content or b"")
    except decoding.DecodeError:
        return
    response.headers.pop("content-encoding", None)
    response.content = body  # sets content-length unless the body is chunked


class Pipe:
    """The `flow.response.stream` callable: decode if needed, and note the time of each chunk."""

    def __init__(
        self, decoder: Callable[[bytes], bytes] | None, chunk_arrived: Callable[[], None]
    ) -> None:
        self._decoder = decoder
        self._chunk_arrived = chunk_arrived

    def __call__(self, chunk: bytes) -> list[bytes]:
        if chunk:
            self._chunk_arrived()
        out = self._decoder(chunk) if self._decoder else chunk
        # Never an empty chunk: mitmproxy would frame it as HTTP/1's last chunk, b"0\r\n\r\n".
        return [out] if out else []


# -- the hooks -----------------------------------------------------------------------------------


def websocket_open(flow: http.HTTPFlow) -> bool:
    """A WebSocket whose handshake is done and whose socket is still open: mitmproxy runs
    `response` on its 101 long before `websocket_end` (the one hook that sees `timestamp_end`)."""
    return flow.websocket is not None and flow.websocket.timestamp_end is None


class Fidelity:
    """What relay.py calls from its hooks: streaming, decoding, size limit and timeouts."""

    def __init__(self) -> None:
        self.clock = Clock()
        self._flows: dict[str, Transport] = {}
        self._offer_h2: dict[tuple[str, str, int], bool] = {}  # (client id, host, port)

    def requestheaders(self, flow: http.HTTPFlow, route: Route) -> Refusal | None:
        """After routing, before the rest of requestheaders (which may still insist on
        buffering: a later `request.stream = False` wins). A refusal is the caller's to answer."""
        request, provider = flow.request, route.provider
        transport = provider.transport
        plan = request_plan(provider.name, transport, request.headers.get("content-length"))
        if isinstance(plan, Refusal):
            return plan
        connection = (flow.client_conn.id, route.host.lower(), route.port)
        self._flows[flow.id] = transport
        self.clock.routed(flow, connection, provider.name, transport.timeouts)
        # A WebSocket handshake needs HTTP/1.1: HTTP/2 has no Upgrade.
        websocket = request.headers.get("upgrade", "").lower() == "websocket"
        self._offer_h2[connection] = transport.upstream_http2 and not websocket
        if plan:
            request.stream = BodyLimit(
                transport.max_request_bytes,
                lambda: self.clock.abort(
                    flow, f"request body over {transport.max_request_bytes} bytes, cut"
                ),
            )
        return None

    def _broken(self, flow: http.HTTPFlow, why: str) -> None:
        """The stream cannot go on truthfully: end it so the client sees it was cut. Without
        chunked framing, mitmproxy sends no last chunk and closes the HTTP/1 connection."""
        if flow.response is not None:
            flow.response.headers.pop("transfer-encoding", None)
        self.clock.abort(flow, why)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.id in self._flows:
            self.clock.request_sent(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        transport = self._flows.get(flow.id)
        response = flow.response
        if transport is None or response is None:
            return
        chunk_arrived = self.clock.response_started(flow)
        status = response.status_code
        has_body = flow.request.method != "HEAD" and status >= 200 and status not in (204, 304)
        fields = response.headers.items(multi=True)  # one pass; items() looks each name up
        plan = plan_response(transport, status, fields, has_body=has_body)
        fix_head(response, plan, http1_client=flow.request.http_version == "HTTP/1.1")
        if plan.stream:
            decoder = None
            if plan.decode:
                decoder = decoding.Decoder(plan.decode, lambda why: self._broken(flow, why))
            response.stream = Pipe(decoder, chunk_arrived)

    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if flow.id in self._flows and response is not None and not response.stream:
            decode_buffered(response)
        self.error(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        """error / websocket_end (and the end of `response`): the flow is over."""
        if websocket_open(flow):
            return  # the idle timer keeps watching the socket until websocket_end
        self._flows.pop(flow.id, None)
        if connection := self.clock.finished(flow):
            self._offer_h2.pop(connection, None)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Before relay.py's connect_to rewrite: the address is still the provider's."""
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
        self.clock.connected(data)
