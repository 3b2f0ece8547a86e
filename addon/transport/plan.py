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
