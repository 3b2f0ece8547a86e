"""The embedded store: counters of the `limits` library in this process's memory.

mitmproxy runs every hook on one event loop thread and `decide` never awaits between its test
and its hits, so checking all counters and then charging them is atomic here."""

from __future__ import annotations

import math
import time

import limits
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from addon.ratelimit.backend import Check, Decision, Slots, Standing


class MemoryStore:
    def __init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        self._slots: dict[str, set[str]] = {}

    async def decide(self, checks: tuple[Check, ...], slots: Slots | None) -> Decision:
        items = [(_item(c), c) for c in checks]
        for item, check in items:
            if check.cost and not self._limiter.test(item, check.key, cost=check.cost):
                return Decision(
                    False,
                    self._standings(items),
                    check.window.name,
                    self._standing(item, check).reset,
                )
        if slots is not None:
            held = self._slots.setdefault(slots.key, set())
            if len(held) >= slots.limit:
                return Decision(False, self._standings(items), "concurrent", 1)
            held.add(slots.lease)
        for item, check in items:
            if check.cost:
                self._limiter.hit(item, check.key, cost=check.cost)
        return Decision(True, self._standings(items))

    async def release(self, slots: Slots) -> None:
        held = self._slots.get(slots.key)
        if held is not None:
            held.discard(slots.lease)
            if not held:
                del self._slots[slots.key]

    async def close(self) -> None:
        self._slots.clear()

    def _standings(self, items: list[tuple[limits.RateLimitItem, Check]]) -> tuple[Standing, ...]:
        return tuple(self._standing(item, check) for item, check in items)

    def _standing(self, item: limits.RateLimitItem, check: Check) -> Standing:
        stats = self._limiter.get_window_stats(item, check.key)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Standing(check.window, stats.remaining, min(reset, check.window.seconds))


def _item(check: Check) -> limits.RateLimitItem:
    return limits.RateLimitItemPerSecond(check.window.amount, check.window.seconds)
