"""Key pools: several keys of one provider, chosen round-robin. A key the provider answered
429 (rate limited) or 401 (refused), when the answer is about the key itself (answers.py),
rests for `retry-after` (or the pool's cool-down) while the others carry the traffic; with
Redis, every keyrelay instance sees the same rests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from addon import tasks
from addon.config.key_sources import PoolSpec
from addon.keys.ids import key_id, retry_after_seconds
from addon.keys.live import LiveKey
from addon.keys.redis_link import RedisLink
from addon.redis_client import RedisFailed

logger = logging.getLogger(__name__)

COOLING_STATUSES = frozenset({401, 429})


def cooldown_for(status: int, retry_after: str | None, spec: PoolSpec) -> float | None:
    """How long a key rests after this answer; None when it does not rest at all."""
    if status not in COOLING_STATUSES:
        return None
    seconds = retry_after_seconds(retry_after) if status == 429 else None
    if seconds is None or seconds <= 0:
        seconds = spec.cooldown
    return min(seconds, spec.max_cooldown)


class Cooldowns:
    """key id -> until (epoch seconds): in memory, and in Redis when shared."""

    def __init__(self, scope: str, redis: RedisLink | None) -> None:
        self.scope, self.redis = scope, redis
        self.local: dict[str, float] = {}

    async def remaining(self, ids: list[str]) -> dict[str, float]:
        """Seconds left for each resting key among `ids`."""
        now = time.time()
        left = {i: self.local[i] - now for i in ids if self.local.get(i, 0) > now}
        if self.redis is not None and ids:
            keys = [self.redis.key("keypool", self.scope, i) for i in ids]
            try:
                pipe = self.redis.client.pipeline(transaction=False)
                for k in keys:
                    pipe.pttl(k)
                ttls = await self.redis.ask("pool cool-downs", pipe.execute)
            except RedisFailed:
                return left  # this instance's own knowledge still holds
            for i, ttl in zip(ids, ttls, strict=True):
                if isinstance(ttl, int) and ttl > 0:
                    left[i] = max(left.get(i, 0.0), ttl / 1000)
        return left

    def rest(self, kid: str, seconds: float) -> None:
        self.local[kid] = max(self.local.get(kid, 0.0), time.time() + seconds)
        if self.redis is not None:
            link = self.redis
            key = link.key("keypool", self.scope, kid)
            tasks.spawn(self._share(link, key, seconds))

    @staticmethod
    async def _share(link: RedisLink, key: str, seconds: float) -> None:
        with contextlib.suppress(RedisFailed):  # logged by the link; rested here anyway
            await link.ask(
                "rest", lambda: link.client.set(key, "1", px=max(1, int(seconds * 1000)))
            )


class KeyPool:
    def __init__(self, name: str, members: list[LiveKey], spec: PoolSpec, cool: Cooldowns):
        self.name, self.members, self.spec, self.cooldowns = name, members, spec, cool
        self._next = 0

    async def pick(self) -> LiveKey | float | None:
        """The next key in turn that is not resting; else the seconds until one is free; None
        when no member has a key at all."""
        waiting = [m.ready() for m in self.members if m.value is None]
        if waiting:
            await asyncio.gather(*waiting)
        present = [(i, m) for i, m in enumerate(self.members) if m.value is not None]
        if not present:
            return None
        ids = {i: key_id(m.value) for i, m in present if m.value}
        resting = await self.cooldowns.remaining(list(ids.values()))
        count = len(self.members)
        for step in range(count):
            index = (self._next + step) % count
            if index in ids and ids[index] not in resting:
                self._next = index + 1
                return self.members[index]
        return min(resting.values())

    def member_ids(self) -> set[str]:
        return {key_id(m.value) for m in self.members if m.value}

    def feedback(self, kid: str, status: int, retry_after: str | None) -> None:
        seconds = cooldown_for(status, retry_after, self.spec)
        if seconds is None or kid not in self.member_ids():
            return
        self.cooldowns.rest(kid, seconds)
        logger.warning(
            "keyrelay: %s: key %s answered %d: resting it for %gs", self.name, kid, status, seconds
        )
