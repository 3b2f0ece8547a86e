"""A cap on HTTP/1 request heads: 431 and a closed connection instead of an endless buffer.

mitmproxy's HTTP/1 server buffers a request head until its blank line, without a limit ("FIXME:
protect against header size DoS" in mitmproxy/proxy/layers/http/_http1.py): one connection
sending header lines forever grew mitmdump by hundreds of MiB, and on close mitmproxy logged
the whole buffer as one line. This wraps `Http1Server.read_headers`: a head (or a partial one)
over `keyrelay_max_head_bytes`, or a line over `keyrelay_max_head_line_bytes`, is answered with
a 431 problem, its buffer dropped and the connection closed; a client that leaves mid-head is
logged with the size of what it sent, never the bytes.

This reaches into mitmproxy's internals, through addon/engine: on a mitmproxy version it was
not checked against the cap is not installed, and start-up stops unless keyrelay_unprotected
(engine.Gate, which relay.py configures first).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from typing import Any

from h11._receivebuffer import ReceiveBuffer
from mitmproxy import ctx, exceptions
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.utils import human

from addon import engine, errorpage
from addon.problems import Refusal

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024
_END = re.compile(b"\n\r?\n")  # the blank line that ends a head (h11's own pattern)
_original = _http1.Http1Server.read_headers


class Limits:
    head: int = MAX_HEAD
    line: int = MAX_LINE


def oversized(buffered: bytes, head: int, line: int) -> str | None:
    """What is too large in a buffer that starts with a request head, or None."""
    end = _END.search(buffered)
    part = buffered[: end.start() + 1] if end else buffered
    if len(part) > head:
        return f"the request head is larger than {head} bytes"
    if any(len(text) > line for text in part.split(b"\n")):
        return f"a request head line is longer than {line} bytes"
    return None


def read_headers(
    self: _http1.Http1Server, event: events.ConnectionEvent
) -> Generator[commands.Command, Any, None]:
    if isinstance(event, events.DataReceived):
        # A buffer within both limits cannot hold anything too large: no copy, no search.
        small = len(self.buf) <= min(Limits.head, Limits.line)
        if not small and (problem := oversized(bytes(self.buf), Limits.head, Limits.line)):
            self.buf = ReceiveBuffer()  # gone now: neither kept nor logged
            page = errorpage.http1_page(Refusal(431, "request-head-too-large", problem))
            yield commands.SendData(self.conn, page)
            yield commands.CloseConnection(self.conn)
            yield commands.Log(f"{human.format_address(self.conn.peername)}: {problem} (431)")
            self.state = self.done
            return
    elif isinstance(event, events.ConnectionClosed) and self.buf:
        size = len(self.buf)
        self.buf = ReceiveBuffer()
        yield commands.Log(
            f"{human.format_address(self.conn.peername)}: client closed the connection "
            f"before completing request headers ({size} bytes)"
        )
    yield from _original(self, event)


def install(head: int, line: int) -> bool:
    """Set the limits; the first call wraps mitmproxy's reader. False when not installed."""
    Limits.head, Limits.line = head, line
    return engine.replace(_http1.Http1Server, "read_headers", read_headers, "head_limit")


class HeadLimit:
    """The two options, applied to every HTTP/1 connection from the next head on."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_max_head_bytes",
            int,
            MAX_HEAD,
            "Largest HTTP/1 request head (request line and headers); larger ones get a 431.",
        )
        loader.add_option(
            "keyrelay_max_head_line_bytes",
            int,
            MAX_LINE,
            "Longest line of an HTTP/1 request head; longer ones get a 431.",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"keyrelay_max_head_bytes", "keyrelay_max_head_line_bytes"}:
            head, line = (
                ctx.options.keyrelay_max_head_bytes,
                ctx.options.keyrelay_max_head_line_bytes,
            )
            if head < 1024 or line < 256:
                raise exceptions.OptionsError(
                    "keyrelay_max_head_bytes and _line_bytes: at least 1024 and 256"
                )
            install(head, line)
