"""Per-provider connect, first-byte and idle timeouts, enforced on mitmproxy's live connections.

mitmproxy itself has no connect timeout and no read timeouts (only `tcp_timeout`, an idle limit
per client connection). There is deliberately no total deadline: a ten-minute generation that
keeps sending is never cut. How each limit is enforced, and why:

- connect: TCP and, for an https upstream, the TLS handshake (the clock stops at
  `tls_established_server`, not at `server_connected`). The `server_connect` hook runs inside
  the task that then awaits `asyncio.open_connection` and, once connected, reads the socket
  (proxy/server.py `open_connection`). Cancelling that task with a message makes mitmproxy
  report the message as the connect error (cancelled during the handshake, the task closes the
  socket and mitmproxy reports "connection closed"); either way the flow's error page is handed
  the 504 problem as a value (`expired`). A task still waiting for one of the 5 connection
  slots per address is not cancelled (that wait is outside mitmproxy's error handling, the
  flow would hang): the clock starts when the slot is taken (`timestamp_start`). An HTTP/2
  upstream that completes the handshake but never sends its preface is left to the first-byte
  limit: mitmproxy sends the request without waiting for the server's SETTINGS.
- first byte: nothing has reached the client yet, so the client should get a 504 problem. On an
  HTTP/1 upstream connection keyrelay feeds mitmproxy, as if from the upstream, a complete 504
  response with `connection: close`: mitmproxy then runs the normal response path (hooks, the
  client's protocol, HTTP/2 included) and closes that upstream connection itself. mitmproxy
  offers no way to fail one stream with a chosen status, so on an HTTP/2 upstream connection,
  or one still being set up (TCP or TLS, with no connect timeout), the connection is closed
  instead, and mitmproxy's error page says the timeout (`expired`, via errorpage.py).
- idle: the upstream connection's handler task is cancelled. mitmproxy then closes the socket
  and ends the client's response early (an HTTP/1 chunked body without its last chunk, an
  HTTP/2 stream reset), so the client can tell the stream was cut. A WebSocket is idle when
  no message went either way (mitmproxy's `tcp_timeout`, global, still applies on top); it
  is closed the same way, and the client gets a close frame.

All three reach into mitmproxy's internals (the proxyserver addon's connection handlers, their
tasks and transports, the HTTP layer's streams), through addon/engine: on a mitmproxy version
they were not checked against start-up stops unless keyrelay_unprotected, and then no timer
starts and no upstream connection is closed from here (`abort` included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.connection import Server
from mitmproxy.proxy import events, server_hooks
from mitmproxy.proxy.layers.http import (
    HttpLayer,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
)
from mitmproxy.proxy.layers.http._http1 import Http1Connection

from addon import engine, flowstate, tasks
from addon.config.transport import Timeouts
from addon.flowlocal import FlowLocal
from addon.problems import Refusal, problem_body

DEFAULT_TIMEOUTS = Timeouts()  # for a connection keyrelay did not plan (one per process)

logger = logging.getLogger(__name__)

Connection = tuple[str, str, int]  # (client connection id, upstream host, port)


@dataclass
class _Watch:
    """The timer of one live flow."""

    provider: str
    timeouts: Timeouts
    connection: Connection
    timer: asyncio.TimerHandle | None = None
    sent_at: float = 0.0  # loop time the whole request was in (the first-byte clock starts)
    head_at: float = 0.0  # time.time() the response head came: the idle clock starts
    last_chunk: float = 0.0  # time.time() of the last streamed chunk; 0 while buffered
    expired: Refusal | None = None  # the client's answer, once a timeout closed the connection

    def cancel(self) -> None:
        if self.timer:
            self.timer.cancel()
            self.timer = None


class Clock:
    """Starts, resets and stops the timers of live flows and upstream connections."""

    def __init__(self) -> None:
        self._flows: FlowLocal[_Watch] = FlowLocal("timeouts.flows")
        self._planned: dict[Connection, _Watch] = {}
        self._connects: dict[str, asyncio.TimerHandle] = {}  # by server connection id

    # -- flows -------------------------------------------------------------------------------

    def routed(
        self, flow: http.HTTPFlow, connection: Connection, provider: str, timeouts: Timeouts
    ) -> None:
        """requestheaders: remember the limits for this flow and the connection it will use."""
        if not engine.checked("timeouts"):
            return  # no watch: no timer starts for this flow
        watch = _Watch(provider, timeouts, connection)
        self._flows.set(flow, watch)
        self._planned[connection] = watch

    def request_sent(self, flow: http.HTTPFlow) -> None:
        """request: the whole request is in; wait at most first_byte for the response head.

        One timer per flow, not one per phase: it fires at the earliest moment either limit
        could be due, and `_check` re-arms it for what is left (a short answer, the common
        case, costs one timer instead of two and their cancellations)."""
        watch = self._flows.get(flow)
        if watch is None or flow.response is not None:
            return
        loop = asyncio.get_running_loop()
        watch.sent_at = loop.time()
        if watch.timeouts.first_byte:
            step = _step(watch.timeouts, watch.timeouts.first_byte)
            watch.cancel()
            watch.timer = loop.call_later(step, self._check, flow)

    def response_started(self, flow: http.HTTPFlow) -> Callable[[], None]:
        """responseheaders: switch to the idle limit. Returns what a streamed chunk calls."""
        watch = self._flows.get(flow)
        if watch is None:
            return _nothing
        watch.head_at = time.time()
        if watch.timeouts.idle and watch.timer is None:
            # (A pending timer was armed at most `idle` ago: it fires before the idle limit.)
            watch.timer = asyncio.get_running_loop().call_later(
                watch.timeouts.idle, self._check, flow
            )
        if flow.response is not None and flow.response.status_code == 101:
            # A WebSocket: no chunks pass here. The idle check reads the connection's last
            # activity, which every message either way refreshes, until websocket_end.
            return _nothing

        def chunk_arrived() -> None:
            watch.last_chunk = time.time()

        return chunk_arrived

    def finished(self, flow: http.HTTPFlow) -> Connection | None:
        """response / error: the flow is over. Returns its connection key."""
        watch = self._flows.pop(flow)
        if watch is None:
            return None
        watch.cancel()
        if self._planned.get(watch.connection) is watch:
            del self._planned[watch.connection]
        return watch.connection

    def abort(self, flow: http.HTTPFlow, why: str) -> None:
        """End this flow's upstream connection now (a broken stream, a body over the limit)."""
        logger.warning("keyrelay: %s: %s", _provider(flow), why)
        _close_upstream(flow, why)

    # -- upstream connections ------------------------------------------------------------------

    def connecting(self, data: server_hooks.ServerConnectionHookData) -> None:
        """server_connect: runs in the task that will open the connection."""
        server, address = data.server, data.server.address
        if address is None or not engine.checked("timeouts"):
            return
        watch = self._planned.get((data.client.id, address[0].lower(), address[1]))
        timeouts = watch.timeouts if watch else DEFAULT_TIMEOUTS
        task = asyncio.current_task()
        if not timeouts.connect or task is None:
            return
        provider = watch.provider if watch else address[0]
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if server.timestamp_start is None:  # still waiting for a connection slot
                self._connects[server.id] = loop.call_later(timeouts.connect, expire)
                return
            left = server.timestamp_start + timeouts.connect - time.time()
            if left > 0.001:
                self._connects[server.id] = loop.call_later(left, expire)
                return
            self._connects.pop(server.id, None)
            refusal = Refusal(
                504,
                "upstream-timeout",
                f"{provider} did not accept a connection within {timeouts.connect:g}s",
            )
            if watch:
                watch.expired = refusal
            task.cancel(refusal.detail)

        self._connects[server.id] = loop.call_later(timeouts.connect, expire)

    def connected(self, server: Server) -> None:
        """The connection is ready (TCP, and TLS for https) or failed: the clock stops."""
        timer = self._connects.pop(server.id, None)
        if timer:
            timer.cancel()

    def expired(self, flow: http.HTTPFlow) -> Refusal | None:
        """error: the answer when a timeout closed this flow's connection."""
        watch = self._flows.get(flow)
        return watch.expired if watch else None

    # -- expiry --------------------------------------------------------------------------------

    def _check(self, flow: http.HTTPFlow) -> None:
        """The flow's timer fired: a limit is due, or the timer is re-armed for what is left."""
        watch = self._flows.get(flow)
        if watch is None:
            return
        watch.timer = None
        if flow.response is not None:
            if watch.timeouts.idle:
                self._idle_check(flow)
            return
        first_byte = watch.timeouts.first_byte
        if not first_byte:
            return  # no first-byte limit: the idle timer starts with the response head
        loop = asyncio.get_running_loop()
        left = watch.sent_at + first_byte - loop.time()
        if left > 0.001:
            watch.timer = loop.call_later(_step(watch.timeouts, left), self._check, flow)
            return
        detail = f"{watch.provider} sent no response within {first_byte:g}s"
        flowstate.of(flow)["timeout"] = "first-byte"
        logger.warning("keyrelay: %s", detail)
        handler = _handler(flow)
        ready = not _connecting(flow.server_conn)  # a response needs a connection to come on
        via = _injection_route(handler, flow) if handler and ready else None
        if via is None:
            # Closed instead: mitmproxy's error page then says this, not "connection closed".
            watch.expired = Refusal(504, "upstream-timeout", detail)
            _close_upstream(flow, detail)
            return
        response = http.Response.make(
            504, problem_body(504, "upstream-timeout", detail), {"content-type": "application/json"}
        )
        tasks.spawn(_answer_instead(handler, flow, via, response))

    def _idle_check(self, flow: http.HTTPFlow) -> None:
        watch = self._flows.get(flow)
        if watch is None:
            return
        last = watch.last_chunk or max(watch.head_at, _last_activity(flow))
        left = last + watch.timeouts.idle - time.time()
        if left > 0.001:
            watch.timer = asyncio.get_running_loop().call_later(left, self._idle_check, flow)
            return
        watch.timer = None
        flowstate.of(flow)["timeout"] = "idle"
        idle = f"{watch.timeouts.idle:g}s"
        if flow.websocket is not None:
            self.abort(flow, f"no WebSocket message either way for {idle}, closed")
        else:
            self.abort(flow, f"upstream sent nothing for {idle}, stream closed")


def _nothing() -> None:
    pass


def _step(timeouts: Timeouts, first_byte_left: float) -> float:
    """How long the flow's timer may sleep while no response has come: no longer than the idle
    limit, which a response head arriving meanwhile would start."""
    return min((t for t in (first_byte_left, timeouts.idle) if t), default=0.0)


def _provider(flow: http.HTTPFlow) -> str:
    return flowstate.of(flow).get("provider", flow.request.host)


def _handler(flow: http.HTTPFlow) -> Any:
    """mitmproxy's live handler of this flow's client connection (proxy/server.py)."""
    if not engine.checked("timeouts"):
        return None
    proxyserver = ctx.master.addons.get("proxyserver")
    return proxyserver.connections.get(flow.client_conn.id) if proxyserver else None


def _last_activity(flow: http.HTTPFlow) -> float:
    """For buffered responses keyrelay sees no chunks: use the connection's last read or write."""
    handler = _handler(flow)
    return handler.timeout_watchdog.last_activity if handler else 0.0


def _connecting(server: Server) -> bool:
    """Not yet usable: TCP still connecting, or its TLS handshake still running."""
    return not server.connected or (server.tls and not server.tls_established)


def _close_upstream(flow: http.HTTPFlow, why: str) -> None:
    handler = _handler(flow)
    if handler is None:
        return
    request = flow.request
    for conn, io in list(handler.transports.items()):
        ours = conn is flow.server_conn or (
            isinstance(conn, Server)
            and _connecting(conn)
            and conn.address == (request.host, request.port)
        )
        if not (ours and isinstance(conn, Server)):
            continue
        # Abort the socket now, not at the task's next await: whatever mitmproxy queues for it
        # meanwhile (the end of a cut request body, say) must never reach the upstream.
        transport = getattr(io.writer, "transport", None)
        if transport is not None:
            transport.abort()
        if io.handler and not io.handler.done():
            io.handler.cancel(why)


class _Head(ResponseHeaders, events.MessageInjected):
    def __init__(self, via: Any, response: http.Response) -> None:
        self.flow, self.message, self.stream_id = via, None, 0
        self.response, self.end_stream = response, False


class _Body(ResponseData, events.MessageInjected):
    def __init__(self, via: Any, data: bytes) -> None:
        self.flow, self.message, self.stream_id, self.data = via, None, 0, data


class _End(ResponseEndOfMessage, events.MessageInjected):
    def __init__(self, via: Any) -> None:
        self.flow, self.message, self.stream_id = via, None, 0


@dataclass
class _ClientSide:
    """Sent as an injected event's flow: no known server connection makes mitmproxy's HttpLayer
    look the stream up by the client connection."""

    client_conn: Any
    server_conn: None = None


def _injection_route(handler: Any, flow: http.HTTPFlow) -> Any:
    """What to send as `flow` in a `MessageInjected` so that mitmproxy's HttpLayer delivers it
    to this flow's stream (HttpLayer._handle_event finds the stream through the HTTP/1
    connection layer of the server, else of the client). None when neither would: HTTP/2 on
    both sides, or the stream is gone."""
    http_layer = next(
        (la for la in handler.layer.context.layers if isinstance(la, HttpLayer)), None
    )
    if http_layer is None:
        return None
    stream_id = next((i for i, st in http_layer.streams.items() if st.flow is flow), None)
    if stream_id is None:
        return None

    def leads_to_stream(conn: Any) -> bool:
        layer = http_layer.connections.get(conn)
        last = layer.context.layers[-1] if layer is not None else None
        return isinstance(last, Http1Connection) and last.stream_id == stream_id

    if leads_to_stream(flow.server_conn):
        return flow
    if leads_to_stream(flow.client_conn):
        return _ClientSide(flow.client_conn)
    return None


async def _answer_instead(
    handler: Any, flow: http.HTTPFlow, via: Any, response: http.Response
) -> None:
    """Give the waiting stream a response as if from the upstream, then drop the upstream
    connection (it still owes this request an answer, so it cannot be reused)."""
    if flow.response is not None:
        return
    await handler.server_event(_Head(via, response))
    await handler.server_event(_Body(via, response.raw_content or b""))
    await handler.server_event(_End(via))
    _close_upstream(flow, "keyrelay answered in place of the upstream")
