"""Client connections: a deadline for each request head, a cap per address, and descriptors.

Slowloris: mitmproxy closes a client connection only after `tcp_timeout` (3600 s in
scripts/_mitm) without any byte, so thousands of half-sent heads, a byte now and then, held
every descriptor and legitimate requests failed with "Too many open files". Here:
- a connection must complete a request head within `keyrelay_head_timeout` seconds of opening,
  and of its last answer finishing (an idle keep-alive connection, as Node closes after 5 s);
  otherwise it is closed. A request in flight, or an open WebSocket, is never cut;
- one address (an IPv6 /64) holds at most `keyrelay_max_connections_per_address` at once (0:
  no cap); the next is refused at connect;
- the descriptor soft limit is raised to the hard limit at start.

Closing a connection from outside its own events reaches into mitmproxy's internals (the
proxyserver addon's live connection handlers, as mitmproxy's own inactivity timeout closes
them), through addon/engine: on a mitmproxy version it was not checked against start-up stops
unless keyrelay_unprotected, and then there is no head deadline; the per-address cap and the
descriptor limit use public hooks and stay.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

from mitmproxy import connection, ctx, exceptions, http

from addon import client_address, engine

logger = logging.getLogger(__name__)

HEAD_TIMEOUT = 10  # seconds (mitmproxy options have no floats)
PER_ADDRESS = 256
_MAX_DESCRIPTORS = 1 << 20  # when the hard limit is "unlimited"


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            logger.warning("keyrelay: could not raise the open-file limit from %d: %s", soft, e)
            return soft, soft
        return soft, target
    return soft, soft


class Connections:
    def __init__(self) -> None:
        self.per_address: Counter[str] = Counter()
        self.trusted: tuple[client_address.Network, ...] = ()  # the rules' trusted proxies
        self.open: dict[str, set[str]] = {}  # client id -> ids of its flows in flight
        self.deadlines: dict[str, asyncio.TimerHandle] = {}
        self.waiting_since: dict[str, float] = {}  # client id -> loop time its wait began
        self._can_close: bool | None = None  # this mitmproxy's internals were checked
        self.head_timeout = HEAD_TIMEOUT

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_head_timeout",
            int,
            HEAD_TIMEOUT,
            "Seconds a client connection has to send a complete request head, from opening and "
            "from its last answer; then it is closed. 0: no limit.",
        )
        loader.add_option(
            "keyrelay_max_connections_per_address",
            int,
            PER_ADDRESS,
            "Client connections one address may hold open at once; more are refused. 0: no cap "
            "(behind a load balancer every client has its address).",
        )

    def configure(self, updated: set[str]) -> None:
        if "keyrelay_head_timeout" not in updated:
            return
        if ctx.options.keyrelay_head_timeout < 0:
            raise exceptions.OptionsError("keyrelay_head_timeout: must be 0 or more")
        self.head_timeout = ctx.options.keyrelay_head_timeout  # read per request: kept here
        if self._can_close is None:
            self._can_close = engine.checked("connections")

    def running(self) -> None:
        before, after = raise_descriptor_limit()
        if after > before:
            logger.info("keyrelay: open-file limit raised from %d to %d", before, after)

    # -- hooks ---------------------------------------------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        address = _address(client)
        cap = ctx.options.keyrelay_max_connections_per_address
        peer = str(client.peername[0]) if client.peername else ""
        if cap and client_address.trusts(peer, self.trusted):
            cap = 0  # a trusted proxy carries many clients' connections: the cap is theirs
        if cap and self.per_address[address] >= cap:
            client.error = f"more than {cap} connections from {address}"
            logger.info("keyrelay: %s: refused, %d connections already open", address, cap)
            return
        self.per_address[address] += 1
        self.open[client.id] = set()
        self._arm(client)

    def in_flight(self) -> int:
        """Requests (and streams) not yet answered in full, on every connection."""
        return sum(map(len, self.open.values()))

    def client_disconnected(self, client: connection.Client) -> None:
        if self.open.pop(client.id, None) is None:
            return  # refused at connect: never counted
        address = _address(client)
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
        self._disarm(client.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        in_flight = self.open.get(flow.client_conn.id)
        if in_flight is not None:
            in_flight.add(flow.id)  # the deadline, when it comes, finds a request in flight

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:  # an open WebSocket stays in flight until websocket_end
            self._finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    websocket_end = error

    # -- the deadline --------------------------------------------------------------------------

    def _finished(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        in_flight = self.open.get(client.id)
        if in_flight is not None and flow.id in in_flight:
            in_flight.discard(flow.id)
            if not in_flight:
                self._arm(client)

    def _arm(self, client: connection.Client) -> None:
        """The wait for a head starts now. One timer per connection, not one per request: a
        pending timer is left to find, when it fires, that the wait began later."""
        seconds = self.head_timeout
        if seconds and self._can_close:
            loop = asyncio.get_running_loop()
            self.waiting_since[client.id] = loop.time()
            if client.id not in self.deadlines:
                self.deadlines[client.id] = loop.call_later(seconds, self._expire, client)

    def _disarm(self, client_id: str) -> None:
        self.waiting_since.pop(client_id, None)
        if deadline := self.deadlines.pop(client_id, None):
            deadline.cancel()

    def _expire(self, client: connection.Client) -> None:
        self.deadlines.pop(client.id, None)
        seconds = self.head_timeout
        if self.open.get(client.id) or not seconds:  # in flight: its end starts a new wait
            return
        loop = asyncio.get_running_loop()
        left = self.waiting_since.get(client.id, 0.0) + seconds - loop.time()
        if left > 0.001:  # answered meanwhile: the wait began later
            self.deadlines[client.id] = loop.call_later(left, self._expire, client)
            return
        server = ctx.master.addons.get("proxyserver")
        handler = server.connections.get(client.id) if server is not None else None
        io = handler.transports.get(handler.client) if handler else None
        if io is not None and io.handler is not None:
            logger.info(
                "keyrelay: %s: no complete request head within %d s, closed",
                client.peername[0] if client.peername else "?",
                seconds,
            )
            io.handler.cancel("keyrelay: request head timeout")


def _address(client: connection.Client) -> str:
    """What the cap counts: an IPv6 client by its /64 (addon/client_address.py)."""
    return client_address.group(str(client.peername[0])) if client.peername else "?"
