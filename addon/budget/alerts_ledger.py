"""Which alerts were raised this period: one claim of an alert's key succeeds per period.

In memory for one instance; in Redis (`SET key 1 NX EX <until the period ends>`) for every
instance sharing it, so an identity's 80% is posted once however many instances see its
spend. A claim this process has seen taken (its own or another's) is remembered until its
period ends, so a claim is asked of Redis once per instance at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from addon.ratelimit.backend import StoreError
from addon.ratelimit.redis_store import store_call
from addon.redis_client import Every, RedisConnection

logger = logging.getLogger(__name__)

SWEEP_EVERY = 600.0  # seconds between two sweeps of claims past their period
LOG_EVERY = 10.0


class Ledger(Protocol):
    async def claim(self, key: str, seconds: int) -> bool:
        """True the first time `key` is claimed in the `seconds` until its period ends."""
        ...

    def taken(self, key: str) -> bool:
        """Seen claimed already (no need to ask again this period)."""
        ...

    async def close(self) -> None: ...


class MemoryLedger:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}  # key -> when its period ends
        self._next_sweep = clock() + SWEEP_EVERY

    def taken(self, key: str) -> bool:
        until = self._until.get(key)
        return until is not None and until > self._clock()

    def note(self, key: str, seconds: int) -> None:
        now = self._clock()
        if now >= self._next_sweep:
            self._until = {k: v for k, v in self._until.items() if v > now}
            self._next_sweep = now + SWEEP_EVERY
        self._until[key] = now + seconds

    async def claim(self, key: str, seconds: int) -> bool:
        if self.taken(key):
            return False
        self.note(key, seconds)
        return True

    async def close(self) -> None:
        self._until.clear()


class RedisLedger:
    """When Redis does not answer, this instance's own memory decides: an alert may then be
    posted once by each instance rather than lost."""

    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        self._redis = RedisConnection(url, timeout=timeout, size=4)  # a few alerts a period
        self._prefix = f"{prefix}:alert:"
        self._seen = MemoryLedger()
        self._log = Every(LOG_EVERY)

    def taken(self, key: str) -> bool:
        return self._seen.taken(key)

    async def claim(self, key: str, seconds: int) -> bool:
        if self._seen.taken(key):
            return False
        client = self._redis.client
        try:
            won = await store_call(
                self._redis, lambda: client.set(self._prefix + key, "1", nx=True, ex=seconds)
            )
        except StoreError as e:
            if self._log(e.kind):
                logger.error("keyrelay: alerts: Redis did not answer (%s); deciding alone", e)
            return await self._seen.claim(key, seconds)
        self._seen.note(key, seconds)  # claimed: by us (won) or by another instance
        return bool(won)

    async def close(self) -> None:
        await self._redis.close()
