"""Who started each job: `kind:id -> owner` until the job's ttl runs out.

In memory by default (a restart forgets every owner: their jobs then answer 404), in Redis
when `limits_backend.redis` is set, so every instance sees the same owners: one key per job,
expiring with it. The owner is kept as a fingerprint of the caller's identity, never the
identity itself: Redis needs no personal data.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from typing import Any, Protocol

from addon.config.limits import BackendSpec
from addon.redis_client import RedisConnection, RedisFailed

MAX_REMEMBERED = 1_000_000  # jobs kept in memory at most; the oldest expiry goes first


class OwnersUnavailable(Exception):
    """The store did not answer; the message names the kind of failure, never an address."""


class Owners(Protocol):
    async def remember(self, job: str, owner: str, ttl: int) -> None: ...

    async def owner(self, job: str) -> str | None: ...


def fingerprint(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class MemoryOwners:
    def __init__(self) -> None:
        self._now = time.monotonic  # tests may replace the clock
        self._owners: dict[str, tuple[float, str]] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap, to drop the expired cheaply

    async def remember(self, job: str, owner: str, ttl: int) -> None:
        now = self._now()
        self._forget_expired(now)
        if len(self._owners) >= MAX_REMEMBERED:
            _, oldest = heapq.heappop(self._expiries)
            self._owners.pop(oldest, None)
        until = now + ttl
        self._owners[job] = (until, fingerprint(owner))
        heapq.heappush(self._expiries, (until, job))

    async def owner(self, job: str) -> str | None:
        entry = self._owners.get(job)
        if entry is None or entry[0] <= self._now():
            return None
        return entry[1]

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, job = heapq.heappop(self._expiries)
            if self._owners.get(job, (None,))[0] == until:
                del self._owners[job]


class RedisOwners:
    def __init__(self, spec: BackendSpec) -> None:
        assert spec.redis is not None
        self._redis = RedisConnection(
            spec.redis, timeout=spec.timeout, size=spec.connections, decode_responses=True
        )
        self._prefix = spec.prefix

    def _key(self, job: str) -> str:
        return f"{self._prefix}:job:{job}"

    async def remember(self, job: str, owner: str, ttl: int) -> None:
        key, value = self._key(job), fingerprint(owner)
        await self._call(lambda: self._redis.client.set(key, value, ex=ttl))

    async def owner(self, job: str) -> str | None:
        key = self._key(job)
        value = await self._call(lambda: self._redis.client.get(key))
        return value if isinstance(value, str) else None

    async def _call(self, command: Any) -> Any:
        try:
            return await self._redis.call(command)
        except RedisFailed as e:
            raise OwnersUnavailable(str(e)) from e

    async def close(self) -> None:
        await self._redis.close()


def make_owners(spec: BackendSpec) -> Owners:
    return RedisOwners(spec) if spec.redis is not None else MemoryOwners()
