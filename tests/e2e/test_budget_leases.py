"""Reservations are leases, alike in memory and in a real redis-server: one that nobody renews
is released (a crashed instance's calls), one renewed is kept, a job's is charged when it
expires and a late result is charged only what the expiry did not; a restarted instance sees
the same figures; spend is ranked for the admin's top view."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from support.redis_server import RedisServer

from addon.budget.books import LEASE_SECONDS, Account, BudgetStore, Lease
from addon.budget.memory import MemoryBooks
from addon.budget.redis_store import RedisBooks

DAY = Account("{alice}:d20261206", 3600, 100, None, identity="alice", period="d20261206")
BOB = Account("{bob}:d20261206", 3600, 100, None, identity="bob", period="d20261206")

Clock = list[float]
Make = Callable[[], BudgetStore]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: RedisServer) -> tuple[Clock, Make]:
    """A clock both stores read, and a way to open the books again (a restarted instance: the
    memory store's books are its own, so it is the same object)."""
    now: Clock = [1_000_000.0]
    if request.param == "memory":
        memory = MemoryBooks(clock=lambda: now[0])
        return now, lambda: memory
    prefix = f"t{request.node.name}"

    def make() -> BudgetStore:
        return RedisBooks(
            redis.url, prefix=prefix, timeout=2.0, connections=2, clock=lambda: now[0]
        )

    return now, make


def reserved(fields: dict[str, int]) -> int:
    return fields.get("reserved", 0)


def test_a_lease_nobody_renews_is_released(store: tuple[Clock, Make]) -> None:
    now, make = store

    async def run() -> None:
        books = make()
        assert await books.reserve((DAY,), "p", 60, Lease("crashed", LEASE_SECONDS)) == 0
        assert await books.reserve((DAY,), "p", 60, Lease("next", LEASE_SECONDS)) == 1
        now[0] += LEASE_SECONDS + 1  # the instance that held it died: nobody renewed it
        again = make()  # another instance, or the same one restarted
        assert await again.reserve((DAY,), "p", 60, Lease("next", LEASE_SECONDS)) == 0
        (fields,) = await again.read((DAY.key,))
        assert reserved(fields) == 60 and fields.get("spent", 0) == 0

    asyncio.run(run())


def test_a_renewed_lease_is_kept_and_its_settlement_releases_it(store: tuple[Clock, Make]) -> None:
    now, make = store

    async def run() -> None:
        books = make()
        assert await books.reserve((DAY,), "p", 60, Lease("long", LEASE_SECONDS)) == 0
        for _ in range(3):  # a long stream: renewed while it runs
            now[0] += LEASE_SECONDS - 10
            await books.renew((DAY,), ("long",))
        assert await books.reserve((DAY,), "p", 60, Lease("other", LEASE_SECONDS)) == 1
        await books.settle((DAY,), "p", "long", 25)
        (fields,) = await books.read((DAY.key,))
        assert fields["spent"] == 25 and reserved(fields) == 0
        now[0] += LEASE_SECONDS + 1  # a settled lease is gone: its expiry releases nothing
        await books.settle((DAY,), "p", None, 0)
        (fields,) = await books.read((DAY.key,))
        assert fields["spent"] == 25 and reserved(fields) == 0

    asyncio.run(run())


def test_a_job_lease_holds_until_its_result_and_is_charged_if_never_fetched(
    store: tuple[Clock, Make],
) -> None:
    now, make = store

    async def run() -> None:
        books = make()
        job = Lease("job:fal.request:1", 600, charge=True)
        assert await books.reserve((DAY,), "p", 40, Lease("submit", LEASE_SECONDS)) == 0
        assert await books.retain((DAY,), "submit", job)
        now[0] += LEASE_SECONDS + 1  # past the flow's lease: the job's still holds
        assert await books.reserve((DAY,), "p", 61, Lease("x", LEASE_SECONDS)) == 1
        await books.settle((DAY,), "p", job.id, 30)  # its result: what it cost
        (fields,) = await books.read((DAY.key,))
        assert (fields["spent"], reserved(fields)) == (30, 0)

        late = Lease("job:fal.request:2", 600, charge=True)
        assert await books.reserve((DAY,), "p", 40, Lease("submit2", LEASE_SECONDS)) == 0
        assert await books.retain((DAY,), "submit2", late)
        now[0] += 601  # nobody fetched it: charged what it held
        await books.settle((DAY,), "p", None, 0)
        (fields,) = await books.read((DAY.key,))
        assert (fields["spent"], reserved(fields)) == (70, 0)
        await books.settle((DAY,), "p", late.id, 55)  # fetched late: only the 15 beyond
        (fields,) = await books.read((DAY.key,))
        assert (fields["spent"], reserved(fields)) == (85, 0)
        assert not await books.retain((DAY,), "gone", late)  # no lease held: nothing kept

    asyncio.run(run())


def test_a_flow_lease_divided_among_jobs_holds_each_apart(store: tuple[Clock, Make]) -> None:
    """Runware: one submit of several tasks, each billed when its own result comes."""
    now, make = store

    async def run() -> None:
        books = make()
        first, second = (Lease(f"job:runware.task:{i}", 600, charge=True) for i in (1, 2))
        assert await books.reserve((DAY,), "p", 50, Lease("submit", LEASE_SECONDS)) == 0
        assert await books.divide((DAY,), "submit", ((first, 20), (second, 20)))
        (fields,) = await books.read((DAY.key,))
        assert reserved(fields) == 40  # the 10 no task holds is released
        await books.settle((DAY,), "p", first.id, 7)  # its result: what it cost
        (fields,) = await books.read((DAY.key,))
        assert (fields["spent"], reserved(fields)) == (7, 20)
        now[0] += 601  # the other's result never fetched: charged what it held
        await books.settle((DAY,), "p", None, 0)
        (fields,) = await books.read((DAY.key,))
        assert (fields["spent"], reserved(fields)) == (27, 0)
        assert not await books.divide((DAY,), "gone", ((first, 5),))

    asyncio.run(run())


def test_spend_is_ranked_for_the_admin_top_view(store: tuple[Clock, Make]) -> None:
    _, make = store

    async def run() -> None:
        books = make()
        for account, spent in ((DAY, 5), (BOB, 9), (DAY, 7)):
            await books.reserve((account,), "p", 0, Lease("r", LEASE_SECONDS))
            await books.settle((account,), "p", "r", spent)
        assert await books.top("d20261206", 5) == [("alice", 12), ("bob", 9)]
        assert await books.top("d20261206", 1) == [("alice", 12)]
        assert await books.top("d20261205", 5) == []

    asyncio.run(run())
