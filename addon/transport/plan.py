"""Transport decisions from heads alone: whether a request is too large or streamed, whether a
response is streamed and what to decode, and the stream callables. Pure: no mitmproxy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from addon.config.transport import TransportSpec
from addon.problems import Refusal
from addon.transport import decoding

STREAMED_TYPES = ("text/event-stream", "application/x-ndjson", "audio/", "application/octet-stream")


def request_plan(
    provider: str, transport: TransportSpec, content_length: str | None
) -> Refusal | bool:
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


def too_large(provider: str, transport: TransportSpec) -> Refusal:
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


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    stream: bool
    decode: str | None  # the content-encoding to undo, or None


def plan_response(
    transport: TransportSpec,
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
        or not (length.isascii() and length.isdigit())
        or int(length) > transport.buffer_responses_up_to
    )
    return ResponsePlan(stream=stream, decode=decode)


# The stages a streamed body passes after decoding, in this order, whoever adds them first:
# the budget meters what the provider sent; ownership finds a created object's id in it;
# masking takes out any key the upstream echoes; the access log counts what goes out.
STAGES = ("meter", "ids", "mask", "count")
Stage = Callable[[bytes], bytes]


class Pipe:
    """The `flow.response.stream` callable, the one per response: decode if needed, note the
    time of each chunk, then the components' stages in STAGES order. Each stage gets what the
    one before passed on (when it passed anything) and b"" once at the end to flush; what it
    returns goes on. The one place that keeps mitmproxy's rule: never an empty chunk, which it
    would frame as HTTP/1's last chunk (b"0\r\n\r\n")."""

    def __init__(
        self, decoder: Callable[[bytes], bytes] | None, chunk_arrived: Callable[[], None]
    ) -> None:
        self._decoder = decoder
        self._chunk_arrived = chunk_arrived
        self._named: dict[str, Stage] = {}
        self._stages: tuple[Stage, ...] = ()

    def add(self, name: str, stage: Stage) -> None:
        if name not in STAGES or name in self._named:
            raise ValueError(f"a stream stage is one of {STAGES}, each once: not {name!r}")
        self._named[name] = stage
        self._stages = tuple(self._named[n] for n in STAGES if n in self._named)

    def __call__(self, chunk: bytes) -> list[bytes]:
        if chunk:
            self._chunk_arrived()
        data = self._decoder(chunk) if self._decoder else chunk
        for stage in self._stages:
            passed = stage(data) if data else b""
            if not chunk:
                passed += stage(b"")
            data = passed
        return [data] if data else []
