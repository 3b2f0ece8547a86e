"""A metered WebSocket session's state, and the reservation steps every protocol's glue shares.

`Session` is one session's reservations and figures, whatever its protocol: `budget/sessions.py`
keeps them (OpenAI Realtime there), and the other protocols' glue (`budget/tts_sessions.py`,
`budget/live_sessions.py`) reaches the books through `Core`, which `Sessions` implements.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from mitmproxy import http

from addon.budget.calls import Call
from addon.config.budget import Price
from addon.metering import prices, realtime
from addon.metering.usage import Usage
from addon.problems import Refusal

Held = tuple[str, int]  # a lease and the nano-dollars it holds
Writes = list[Callable[[], Coroutine[Any, Any, None]]]  # settlements to run


@dataclass
class Session:
    """One metered session's state, on its call."""

    flow_id: str
    model: str
    price: Price | None  # None: not metered (no budget, no price), but held to the rules
    cap: int  # output tokens a response may make (sent to the provider as the session's cap)
    context: int  # input tokens a response may be billed at most
    limited: bool  # under a budget: reservations are taken
    ready: Held | None = None  # the next response's reservation
    creating: deque[Held] = field(default_factory=deque)  # forwarded response.create, unstarted
    running: dict[str, Held] = field(default_factory=dict)  # by response id
    usage: Usage = field(default_factory=dict)
    cost: int = 0  # nano-dollars settled so far
    ended: bool = False  # keyrelay ended it: nothing more from the client goes on
    ga: bool = True  # OpenAI's GA interface (`max_output_tokens`), else the beta's
    latest: Usage | None = None  # Gemini Live: the running turn's usage as last reported
    leases_made: int = 0

    def worst(self) -> int:
        return realtime.worst_case(self.price, self.cap, self.context) if self.price else 0

    def cost_of(self, usage: Usage) -> int:
        return realtime.cost(self.price, usage) if self.price else 0

    def next_lease(self) -> str:
        self.leases_made += 1
        return f"{self.flow_id}#{self.leases_made}"

    def leases(self) -> list[str]:
        held = [*self.creating, *self.running.values()]
        if self.ready is not None:
            held.append(self.ready)
        return [lease for lease, amount in held if amount]

    def add(self, usage: Usage, cost: int) -> None:
        """A settled part's usage and cost join the session's figures."""
        for name, n in usage.items():
            self.usage[name] = self.usage.get(name, 0) + n
        self.cost += cost


class Core(Protocol):
    """The steps on the books a protocol's glue takes (`budget/sessions.Sessions`)."""

    def keep(self, flow: http.HTTPFlow, session: Session) -> None:
        """Keep the session on its flow (until `websocket_end`)."""

    def drop(self, flow: http.HTTPFlow) -> None:
        """Forget a session refused at its open."""

    async def reserve(self, call: Call, session: Session, amount: int) -> Held | Refusal | None:
        """`amount` reserved under a lease of its own (0 held when not under a budget); None
        when the budget cannot cover it; a refusal when the store failed and the rules fail
        closed."""

    async def start(self, call: Call, session: Session) -> Held | None:
        """A response starts: it takes `ready`, and the next one is reserved. None: none was
        held."""

    async def settle(self, call: Call, held: Held, cost: int) -> None: ...

    def close(
        self, flow: http.HTTPFlow, session: Session, message: bytes, code: int, reason: str
    ) -> None:
        """End the session: `message` to the client, then the close."""


class Glue(Protocol):
    """One protocol's sessions: the open (the handshake) and each message after it."""

    async def open(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None: ...

    async def message(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None: ...


def unpriced(provider: str, why: str) -> Refusal:
    return Refusal(403, "unpriced", f"{provider}: {why}, so under a budget it is refused")


def cannot_open(what: str, amount: int) -> Refusal:
    """The 429 for a session whose first `what` the budget cannot cover."""
    return Refusal(
        429,
        "budget-exhausted",
        f"the budget cannot cover a session's first {what} (up to ${prices.usd(amount)}); it "
        "resets with its period",
    )
