"""What a limit decision asks of a store, and what it answers. Both stores decide all of a
request's counters at once: either every counter is charged or none is, so a request refused
by its daily quota does not also eat its per-minute budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from addon.config.limits import Window


@dataclass(frozen=True, slots=True)
class Check:
    key: str  # names the counter: who, which provider, which window
    window: Window
    cost: int


@dataclass(frozen=True, slots=True)
class Slots:
    """Concurrent open requests: at most `limit` leases under `key`."""

    key: str
    limit: int
    lease: str


@dataclass(frozen=True, slots=True)
class Standing:
    """One counter after the decision: units left and seconds until its window resets."""

    window: Window
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    standings: tuple[Standing, ...]
    blocked: str | None = None  # the window name, or "concurrent"
    retry_after: int = 0


class StoreError(Exception):
    """The shared store could not decide: Redis down, or this one call busy or timed out.
    `kind` sorts it for logs (see addon/redis_client.py)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Store(Protocol):
    async def decide(self, checks: tuple[Check, ...], slots: Slots | None) -> Decision: ...

    async def release(self, slots: Slots) -> None: ...

    async def close(self) -> None: ...
