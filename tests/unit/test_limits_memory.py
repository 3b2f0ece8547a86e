"""The in-memory fixed-window counters: a window per key from its first charge, refusals
charged to nothing, expiry without a timer thread."""

from __future__ import annotations

import asyncio
import threading

from addon.config.limits import Window
from addon.ratelimit.backend import Check, Slots
from addon.ratelimit.memory import SWEEP_EVERY, MemoryStore

MINUTE = Window("rate", 2, 60)
DAY = Window("daily", 100, 86400)


def test_windows_count_refuse_and_expire() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    checks = (Check("a:p", MINUTE, 1), Check("a:p", DAY, 1))

    async def scenario() -> None:
        threads = threading.active_count()
        assert [(await store.decide(checks, None)).allowed for _ in range(2)] == [True, True]
        refused = await store.decide(checks, None)
        assert not refused.allowed and refused.blocked == "rate" and refused.retry_after == 60
        assert [s.remaining for s in refused.standings] == [0, 98]  # the refusal costs nothing
        now[0] += 30
        assert (await store.decide(checks, None)).retry_after == 30
        assert (await store.decide((Check("b:p", MINUTE, 1),), None)).allowed  # per key
        now[0] += 31  # the minute window ends; the daily one goes on
        allowed = await store.decide(checks, None)
        assert allowed.allowed and [s.remaining for s in allowed.standings] == [1, 97]
        assert threading.active_count() == threads  # no timer thread

    asyncio.run(scenario())


def test_free_checks_cost_nothing_and_slots_are_held_until_released() -> None:
    store = MemoryStore()
    slots = Slots("a:open", 1, "lease-1")

    async def scenario() -> None:
        free = (Check("a:e0", MINUTE, 0),)
        assert all([(await store.decide(free, None)).allowed for _ in range(5)])
        assert (await store.decide((), slots)).allowed
        refused = await store.decide((), Slots("a:open", 1, "lease-2"))
        assert not refused.allowed and refused.blocked == "concurrent"
        await store.release(slots)
        assert (await store.decide((), Slots("a:open", 1, "lease-2"))).allowed

    asyncio.run(scenario())


def test_expired_windows_are_swept() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])

    async def scenario() -> None:
        for n in range(50):
            await store.decide((Check(f"k{n}", MINUTE, 1),), None)
        now[0] += SWEEP_EVERY + 61
        await store.decide((Check("fresh", MINUTE, 1),), None)
        assert list(store._windows) == ["fresh:2/60"]

    asyncio.run(scenario())
