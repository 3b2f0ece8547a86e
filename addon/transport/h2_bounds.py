"""Bounds on HTTP/2 clients: what keyrelay buffers for them, and how fast they open streams.

mitmproxy's HTTP/2 server layer (`Http2Server`, mitmproxy/proxy/layers/http/_http2.py):
- buffers every byte of a response that the client's flow-control window does not admit yet,
  without a limit: a client that never opens its window made keyrelay hold a 300 MiB answer.
  Here, once more than MAX_BUFFERED bytes wait for one client connection, the stream that
  grew it is reset (ENHANCE_YOUR_CALM) and its request cancelled, as a client reset would;
- opens a flow, and an upstream request, for every stream a client starts, even one it resets
  in the same breath (HTTP/2 "rapid reset": 20,000 HEADERS+RST frames sent 3,200 requests
  upstream with the key). Here a stream opened and reset within one read never becomes a
  request, and a connection that resets more than MAX_RESETS_PER_SECOND streams in a second,
  or opens more than MAX_STREAMS_PER_SECOND, is closed with GOAWAY (ENHANCE_YOUR_CALM). (At
  most 100 streams are open at once: hyper-h2's SETTINGS_MAX_CONCURRENT_STREAMS.)

This reaches into mitmproxy's internals, through addon/engine: on a mitmproxy version it was
not checked against these bounds are not installed, and start-up stops unless
keyrelay_unprotected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import h2.errors
import h2.events
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http2
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, RequestProtocolError, ResponseData

from addon import engine

MAX_BUFFERED = 16 * 1024 * 1024  # bytes waiting for one client connection's windows
MAX_STREAMS_PER_SECOND = 1000  # an SDK's burst fits; each stream costs a flow
MAX_RESETS_PER_SECOND = 100  # a browser cancels a few fetches, not hundreds a second
_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
_original = _http2.Http2Server._handle_event
_STREAM_EVENTS = (
    h2.events.RequestReceived,
    h2.events.DataReceived,
    h2.events.TrailersReceived,
    h2.events.StreamEnded,
    h2.events.StreamReset,
)


class StreamRate:
    """Streams a connection opened and reset in the current second; a filter over hyper-h2's
    events."""

    def __init__(self, receive: Callable[[Any], list[Any]], acknowledge: Callable[..., Any]):
        self.receive, self.acknowledge = receive, acknowledge
        self.second, self.opened, self.resets, self.exceeded = 0, 0, 0, False

    def __call__(self, data: Any) -> list[Any]:
        received = self.receive(data)
        opened = {e.stream_id for e in received if isinstance(e, h2.events.RequestReceived)}
        reset = {e.stream_id for e in received if isinstance(e, h2.events.StreamReset)}
        now = int(time.monotonic())
        if now != self.second:
            self.second, self.opened, self.resets = now, 0, 0
        self.opened += len(opened)
        self.resets += len(reset)
        self.exceeded |= self.opened > MAX_STREAMS_PER_SECOND or self.resets > MAX_RESETS_PER_SECOND
        dropped = opened if self.exceeded else opened & reset
        if not dropped:
            return received
        kept = []
        for event in received:
            if isinstance(event, _STREAM_EVENTS) and event.stream_id in dropped:
                if isinstance(event, h2.events.DataReceived):  # hand the window back
                    self.acknowledge(event.flow_controlled_length, event.stream_id)
                continue
            kept.append(event)
        return kept


def _handle_event(
    self: _http2.Http2Server, event: events.Event
) -> Generator[commands.Command, Any, None]:
    h2_conn = self.h2_conn
    if isinstance(event, events.Start):
        h2_conn.receive_data = StreamRate(  # type: ignore[method-assign]
            h2_conn.receive_data, h2_conn.acknowledge_received_data
        )
    yield from _original(self, event)
    rate = h2_conn.receive_data
    if isinstance(rate, StreamRate) and rate.exceeded:
        rate.exceeded = False
        yield from self.protocol_error(
            f"more than {MAX_STREAMS_PER_SECOND} HTTP/2 streams or {MAX_RESETS_PER_SECOND} "
            "resets in a second",
            _CALM,
        )
    elif isinstance(event, ResponseData) and _buffered(self) > MAX_BUFFERED:
        stream = event.stream_id
        h2_conn.reset_stream(stream, _CALM)
        yield commands.SendData(self.conn, h2_conn.data_to_send())
        if self.streams.pop(stream, None) is not None:
            yield ReceiveHttp(
                RequestProtocolError(
                    stream,
                    f"the client did not read its response: over {MAX_BUFFERED} bytes waiting",
                    code=ErrorCode.CANCEL,
                )
            )


def _buffered(server: _http2.Http2Server) -> int:
    return sum(
        len(chunk.data) for queue in server.h2_conn.stream_buffers.values() for chunk in queue
    )


def install() -> bool:
    return engine.replace(_http2.Http2Server, "_handle_event", _handle_event, "h2_bounds")
