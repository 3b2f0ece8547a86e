"""The books in memory: reservations that fit exactly under concurrency, settlements that
release the rest, provider shares, periods and their resets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from addon.budget.books import Account, Lease, account_key, periods
from addon.budget.memory import MemoryBooks

DAY = Account("{who}:d20261124", 3600, limit=100, provider_limit=None)
MONTH = Account("{who}:m202611", 3600, limit=1000, provider_limit=60)


def lease(name: str = "a") -> Lease:
    return Lease(name, 120)


def test_concurrent_reservations_fit_exactly() -> None:
    async def run() -> list[int]:
        books = MemoryBooks()
        return await asyncio.gather(
            *(books.reserve((DAY, MONTH), "p", 30, lease(str(i))) for i in range(10))
        )

    results = asyncio.run(run())
    # The month's provider share (60) holds two reservations of 30; the day's (100) three.
    assert results.count(0) == 2 and results.count(2) == 8


def test_settling_releases_the_rest_and_charges_the_cost() -> None:
    async def run() -> list[dict[str, int]]:
        books = MemoryBooks()
        assert await books.reserve((DAY,), "p", 40, lease("1")) == 0
        assert await books.reserve((DAY,), "p", 40, lease("2")) == 0
        assert await books.reserve((DAY,), "p", 40, lease("3")) == 1  # 80 held, 120 > 100
        await books.settle((DAY,), "p", "1", 10)
        assert await books.reserve((DAY,), "q", 40, lease("4")) == 0  # 10 + 40 + 40 = 90
        assert await books.reserve((DAY,), "q", 11, lease("5")) == 1
        return await books.read((DAY.key,))

    (fields,) = asyncio.run(run())
    assert fields == {
        "spent": 10,
        "spent:p": 10,
        "reserved": 80,
        "reserved:p": 40,
        "reserved:q": 40,
    }


def test_a_spent_budget_refuses_even_a_free_request() -> None:
    async def run() -> int:
        books = MemoryBooks()
        await books.reserve((DAY,), "p", 0, lease())
        await books.settle((DAY,), "p", "a", 100)
        return await books.reserve((DAY,), "p", 0, lease("b"))

    assert asyncio.run(run()) == 1


def test_an_account_ends_with_its_ttl() -> None:
    now = [0.0]
    books = MemoryBooks(clock=lambda: now[0])

    async def run() -> list[dict[str, int]]:
        await books.settle((DAY,), "p", None, 100)
        now[0] = 3601.0
        return await books.read((DAY.key,))

    assert asyncio.run(run()) == [{}]


def test_periods_reset_at_utc_midnight_and_month_start() -> None:
    now = datetime(2026, 2, 28, 23, 59, 30, tzinfo=UTC)
    day, month = periods(now)
    assert (day.ident, month.ident) == ("d20260228", "m202602")
    assert day.resets == datetime(2026, 3, 1, tzinfo=UTC) == month.resets
    assert day.seconds_left(now) == 30
    assert account_key("token:alice", day) != account_key("token:bob", day)
    assert "alice" not in account_key("token:alice", day)  # hashed: no personal data in Redis


def test_a_settlement_after_its_account_ended_releases_nothing() -> None:
    now = [0.0]
    books = MemoryBooks(clock=lambda: now[0])

    async def run() -> list[dict[str, int]]:
        await books.reserve((DAY,), "p", 50, lease())
        now[0] = 3601.0  # the account expired (Redis: lost its data) while the call ran
        await books.settle((DAY,), "p", "a", 20)
        return await books.read((DAY.key,))

    # Released below zero, the next 50 reserved would be hidden by it and the budget overspent.
    assert asyncio.run(run()) == [{"spent": 20, "spent:p": 20}]


def test_neither_store_takes_a_negative_amount() -> None:
    """A negative reservation once freed what concurrent requests held (a negative max_tokens
    made one); both stores refuse it before they write anything."""
    from addon.budget.books import NegativeAmount
    from addon.budget.redis_store import RedisBooks

    async def run() -> None:
        memory = MemoryBooks()
        assert await memory.reserve((DAY,), "p", 90, lease()) == 0
        redis = RedisBooks("redis://127.0.0.1:1/0", prefix="t", timeout=0.1, connections=1)
        for books in (memory, redis):
            for attempt in (
                books.reserve((DAY,), "p", -50, lease("b")),
                books.settle((DAY,), "p", "a", -1),
            ):
                try:
                    await attempt
                except NegativeAmount:
                    continue
                raise AssertionError(f"{type(books).__name__} took a negative amount")
        assert await memory.reserve((DAY,), "p", 20, lease("c")) == 1  # the 90 is still held

    asyncio.run(run())
