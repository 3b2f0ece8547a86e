"""The embedded store: fixed-window counters in this process's memory.

A window starts at its key's first charged request and lasts `seconds`, as in the Redis store.
mitmproxy runs every hook on one event loop thread and `decide` never awaits between its test
and its charges, so checking all counters and then charging them is atomic here. (Our own few
lines rather than the `limits` library's MemoryStorage: that one starts a timer thread to expire
keys, which under load costs more than the counting.)"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from addon.ratelimit.backend import Check, Decision, Slots, Standing

SWEEP_EVERY = 60.0  # seconds between two sweeps of expired windows


@dataclass
class _Window:
    ends: float  # monotonic time
    used: int


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._slots: dict[str, set[str]] = {}
        self._next_sweep = clock() + SWEEP_EVERY

    async def decide(self, checks: tuple[Check, ...], slots: Slots | None) -> Decision:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        windows = [(check, self._current(check, now)) for check in checks]
        for check, window in windows:
            if check.cost and window.used + check.cost > check.window.amount:
                return Decision(
                    False,
                    _standings(windows, now),
                    check.window.name,
                    _standing(check, window, now).reset,
                )
        if slots is not None:
            held = self._slots.setdefault(slots.key, set())
            if len(held) >= slots.limit:
                return Decision(False, _standings(windows, now), "concurrent", 1)
            held.add(slots.lease)
        for check, window in windows:
            if check.cost:
                window.used += check.cost
                self._windows[_key(check)] = window  # a new window starts with its first charge
        return Decision(True, _standings(windows, now))

    async def release(self, slots: Slots) -> None:
        held = self._slots.get(slots.key)
        if held is not None:
            held.discard(slots.lease)
            if not held:
                del self._slots[slots.key]

    async def close(self) -> None:
        self._windows.clear()
        self._slots.clear()

    def _current(self, check: Check, now: float) -> _Window:
        window = self._windows.get(_key(check))
        if window is None or window.ends <= now:
            return _Window(now + check.window.seconds, 0)
        return window

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w.ends > now}
        self._next_sweep = now + SWEEP_EVERY


def _key(check: Check) -> str:
    return f"{check.key}:{check.window.amount}/{check.window.seconds}"


def _standing(check: Check, window: _Window, now: float) -> Standing:
    reset = max(1, math.ceil(window.ends - now))
    remaining = max(0, check.window.amount - window.used)
    return Standing(check.window, remaining, min(reset, check.window.seconds))


def _standings(windows: list[tuple[Check, _Window]], now: float) -> tuple[Standing, ...]:
    return tuple(_standing(check, window, now) for check, window in windows)
