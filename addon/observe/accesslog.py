"""One structured line per request: who, which provider, what, how it went. Never a key, a
body, or a query value (queries can carry secrets: only the path is logged). What a client
chose (identity, method, path) is escaped: a text line stays one line of fixed fields."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import IO
from urllib.parse import quote

FORMATS = ("text", "json", "off")


@dataclass(slots=True)  # not frozen: its __init__ would go through object.__setattr__
class Entry:
    time: float  # request arrival, epoch seconds
    identity: str
    provider: str | None
    method: str
    host: str | None  # upstream host; None when nothing was forwarded
    path: str  # upstream path (or the client's, when refused), without the query
    status: int | None  # what the client got; None when the flow failed without a response
    bytes_in: int  # request body bytes received from the client
    bytes_out: int  # response body bytes sent to the client
    duration_ms: float | None
    ttfb_ms: float | None
    decision: str  # "forwarded", "refused", "replayed", "admin", "error"
    refusal: str | None = None  # the refusal reason, when keyrelay answered itself
    detail: str | None = None  # the refusal's detail, as the client got it
    error: str | None = None  # why the flow failed (client went away, upstream unreachable)
    usage: dict[str, float] | None = None  # the provider's own units (input_tokens, characters...)
    cost: float | None = None  # USD, from the rules' prices
    model: str | None = None  # what it was priced as
    charged: str | None = None  # "reservation": no usage was reported, the worst case was charged


def as_json(entry: Entry) -> str:
    data = {name: value for name in _NAMES if (value := getattr(entry, name)) is not None}
    data["time"] = iso_time(entry.time)
    return _COMPACT.encode(data)


# json.dumps builds an encoder on every call given any option; this one is made once.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


_NAMES = tuple(f.name for f in fields(Entry))  # once: dataclasses.asdict costs more than a line


def as_text(entry: Entry) -> str:
    target = f"{entry.host}{entry.path}" if entry.host else entry.path
    parts = [
        iso_time(entry.time),
        escape(entry.identity),
        entry.provider or "-",
        escape(entry.method),
        escape(target),
        str(entry.status) if entry.status is not None else "-",
        f"in={entry.bytes_in}",
        f"out={entry.bytes_out}",
        f"dur={_ms(entry.duration_ms)}",
        f"ttfb={_ms(entry.ttfb_ms)}",
        entry.decision,
    ]
    if entry.refusal:
        parts.append(f"reason={entry.refusal}")
    if entry.detail:
        parts.append(f"detail={json.dumps(entry.detail)}")
    if entry.usage is not None:
        units = ",".join(f"{name}:{_number(n)}" for name, n in entry.usage.items())
        parts.append(f"usage={units or '-'}")
    if entry.cost is not None:
        parts.append(f"cost={_number(entry.cost)}")
    if entry.charged:
        parts.append(f"charged={entry.charged}")
    if entry.error:
        parts.append(f"error={json.dumps(entry.error)}")
    return " ".join(parts)


def escape(text: str) -> str:
    """A field a client chose, as one token of one line: control characters (ESC, VT, FF, CR,
    LF, DEL, C1, U+2028...) and whitespace (HTTP/2 lets a path hold spaces) percent-encoded,
    so no client can forge a line, colour a terminal or shift the fields after it."""
    # Every whitespace character but the ASCII space is also unprintable (Cc, Zs, Zl, Zp).
    if text.isprintable() and " " not in text:
        return text
    return "".join(
        c if c.isprintable() and not c.isspace() else quote(c, safe="", errors="surrogateescape")
        for c in text
    )


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:.9f}".rstrip("0")


def render(entry: Entry, fmt: str) -> str | None:
    if fmt == "off":
        return None
    return as_json(entry) if fmt == "json" else as_text(entry)


def iso_time(ts: float) -> str:
    """`2026-11-24T20:11:01.123Z`, as datetime's isoformat(timespec="milliseconds") spells
    it in UTC; the seconds part made once per second (every line of that second shares it)."""
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)  # datetime rounds to the microsecond first (half to even)
    second = int(whole) + micros // 1_000_000
    global _second
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micros % 1_000_000 // 1000:03d}Z"


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


class Output:
    """Where the lines go: past mitmproxy's log handlers (which format a record for each of them
    and schedule a deprecated `add_log` hook over every addon), straight to the stream mitmdump
    prints on and to a file kept open. Only without a stream (the console UI) does a line go
    through `logging`, as a record for the root logger's handlers."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self._stream: IO[str] | None = None
        self._file: WatchedFileHandler | None = None
        self._flush_pending = False

    def print_to(self, stream: IO[str] | None) -> None:
        """Bare lines on `stream`; None: through the root logger's handlers, like any log."""
        self._stream = stream
        self.logger.propagate = stream is None

    def append_to(self, path: Path | None) -> None:
        """Also append to `path` (None: no file). The file stays open; a log rotation that
        moves it away is noticed and the path opened anew (WatchedFileHandler)."""
        self.close()
        if path is not None:
            self._file = WatchedFileHandler(path, encoding="utf-8")

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, line: str) -> None:
        text = line + "\n"
        if self._stream is not None:
            self._stream.write(text)
        elif self.logger.propagate:
            self.logger.info(line)
        if self._file is not None and self._file.stream is not None:
            self._file.stream.write(text)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Flushed at the end of this turn of the event loop, not after every line: under load
        many lines share one write, and one check that the file was not rotated away."""
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutting down): now
            self.flush()
            return
        self._flush_pending = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self._stream is not None:
            self._stream.flush()
        if self._file is not None:
            if self._file.stream is not None:
                self._file.stream.flush()
            self._file.reopenIfNeeded()  # rotated away: the next lines go to the path anew
