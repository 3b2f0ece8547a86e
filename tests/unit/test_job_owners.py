"""The in-memory owner store: expiry, replacement, the bound on what it keeps."""

from __future__ import annotations

import asyncio

import pytest

from addon.jobs import owners
from addon.jobs.owners import MemoryOwners, fingerprint


def test_an_owner_is_kept_as_a_fingerprint_until_its_ttl() -> None:
    store = MemoryOwners()
    now = [1000.0]
    store._now = lambda: now[0]

    async def scenario() -> None:
        await store.remember("fal:a", "token:alice", ttl=60)
        assert await store.owner("fal:a") == fingerprint("token:alice") != "token:alice"
        assert await store.owner("fal:b") is None
        now[0] += 61
        assert await store.owner("fal:a") is None
        await store.remember("fal:c", "token:bob", ttl=60)  # and the expired one is dropped
        assert "fal:a" not in store._owners

    asyncio.run(scenario())


def test_the_oldest_goes_first_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owners, "MAX_REMEMBERED", 2)
    store = MemoryOwners()

    async def scenario() -> None:
        await store.remember("j:1", "a", ttl=10)
        await store.remember("j:2", "a", ttl=20)
        await store.remember("j:3", "a", ttl=30)
        assert await store.owner("j:1") is None
        assert await store.owner("j:2") == await store.owner("j:3") == fingerprint("a")

    asyncio.run(scenario())
