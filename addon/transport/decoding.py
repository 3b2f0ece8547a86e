"""Incremental content decoders, so a compressed stream reaches the client as plain bytes chunk by
chunk. A `Decoder` is usable as mitmproxy's `flow.response.stream` callable: it is called with
each chunk and once with b"" at the end."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

import brotli
import zstandard


class DecodeError(ValueError):
    pass


class _Step(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Gzip:
    """gzip, including concatenated members (what `cat a.gz b.gz` and some servers produce)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            data = self._d.unused_data
            if data:
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return b"".join(out)

    def flush(self) -> bytes:
        if not self._d.eof:
            raise DecodeError("gzip stream ended early")
        return self._d.flush()


class _Deflate:
    """HTTP's "deflate" is zlib-wrapped, but servers also send raw deflate: decide on the first
    bytes, as browsers do."""

    def __init__(self) -> None:
        self._d: zlib._Decompress | None = None
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            zlib_header = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return self._d.decompress(data)

    def flush(self) -> bytes:
        if self._d is None:
            if self._head:
                raise DecodeError("deflate stream ended early")
            return b""
        if not self._d.eof:
            raise DecodeError("deflate stream ended early")
        return self._d.flush()


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        return bytes(self._d.process(data))

    def flush(self) -> bytes:
        if not self._d.is_finished():
            raise DecodeError("brotli stream ended early")
        return b""


class _Zstd:
    """zstd, frame after frame (a stream may hold several)."""

    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            self._fed = True
            data = self._d.unused_data if self._d.eof else b""
            if self._d.eof:
                self._d, self._fed = zstandard.ZstdDecompressor().decompressobj(), False
        return b"".join(out)

    def flush(self) -> bytes:
        if self._fed:
            raise DecodeError("zstd stream ended early")
        return b""


_CODINGS: dict[str, Callable[[], _Step]] = {
    "gzip": _Gzip,
    "x-gzip": _Gzip,
    "deflate": _Deflate,
    "br": _Brotli,
    "zstd": _Zstd,
}


def codings(header: str | None) -> tuple[str, ...]:
    """The content codings of a Content-Encoding value, in the order they were applied."""
    if not header:
        return ()
    return tuple(c for c in (p.strip().lower() for p in header.split(",")) if c != "identity")


def can_decode(header: str | None) -> bool:
    return all(c in _CODINGS for c in codings(header))


class Decoder:
    """Undoes every coding of a Content-Encoding value, incrementally.

    Never raises: mitmproxy calls it inside its connection state machine, where an exception would
    wedge the connection. On corrupt input it emits nothing more and calls `on_error` once, whose
    job is to end the stream so the client sees a truncated body instead of false bytes."""

    def __init__(
        self, content_encoding: str, on_error: Callable[[str], None] | None = None
    ) -> None:
        names = codings(content_encoding)
        # Applied left to right by the sender, so undone right to left.
        self._steps: Sequence[_Step] = [_CODINGS[n]() for n in reversed(names)]
        self._on_error = on_error
        self.failed: str | None = None

    def __call__(self, chunk: bytes) -> bytes:
        if self.failed:
            return b""
        try:
            return self._flush() if chunk == b"" else self._feed(chunk)
        except (zlib.error, brotli.error, zstandard.ZstdError, DecodeError) as e:
            self.failed = f"cannot decode the upstream's content-encoding: {e}"
            if self._on_error:
                self._on_error(self.failed)
            return b""

    def _feed(self, data: bytes) -> bytes:
        for step in self._steps:
            data = step.feed(data)
        return data

    def _flush(self) -> bytes:
        data = b""
        for step in self._steps:
            data = (step.feed(data) if data else b"") + step.flush()
        return data


def decode_all(content_encoding: str, body: bytes) -> bytes:
    """Decode a whole body; raises DecodeError when it is corrupt."""
    errors: list[str] = []
    decoder = Decoder(content_encoding, errors.append)
    out = decoder(body) + decoder(b"")
    if errors:
        raise DecodeError(errors[0])
    return out
