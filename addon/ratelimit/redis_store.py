"""The shared store: Redis, one EVALSHA per decision, correct for any number of keyrelay
instances because the script runs atomically inside Redis.

Why not the `limits` library's Redis storage: each of its hits is its own round trip and is
charged on its own, so a request with three counters (per-minute, daily, endpoint) would take
three round trips and a request refused by the second counter would already have been charged
by the first. It has no concurrency limit either. This script checks every counter and the
open-request slots first and charges them only if all pass, with the same fixed-window rule
as the in-memory store (a window starts at its first request and lasts `seconds`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from addon import tasks
from addon.ratelimit.backend import Check, Decision, Slots, Standing, StoreError
from addon.redis_client import RedisConnection, RedisFailed

# KEYS: the counters, then the slots set (when ARGV[2] == "1").
# ARGV: n, has_slots, then per counter: amount, window ms, cost; then slots: limit, lease, ttl ms.
# Returns {allowed, blocked index (0 none, n+1 slots), then per counter: used, ms to reset}.
DECIDE = """
local n = tonumber(ARGV[1])
local has_slots = ARGV[2] == '1'
local blocked = 0
for i = 1, n do
  local amount, cost = tonumber(ARGV[3*i]), tonumber(ARGV[3*i + 2])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cost > 0 and used + cost > amount then blocked = i break end
end
local now_ms = 0
if blocked == 0 and has_slots then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local base = 3*n + 3
  redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[n + 1]) >= tonumber(ARGV[base]) then blocked = n + 1 end
end
local out = {blocked == 0 and 1 or 0, blocked}
for i = 1, n do
  local window, cost = tonumber(ARGV[3*i + 1]), tonumber(ARGV[3*i + 2])
  local used
  if blocked == 0 and cost > 0 then
    used = redis.call('INCRBY', KEYS[i], cost)
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], window) end
  else
    used = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then ttl = window end
  out[#out + 1] = used
  out[#out + 1] = ttl
end
if blocked == 0 and has_slots then
  local base = 3*n + 3
  local ttl = tonumber(ARGV[base + 2])
  redis.call('ZADD', KEYS[n + 1], now_ms + ttl, ARGV[base + 1])
  redis.call('PEXPIRE', KEYS[n + 1], ttl)
end
return out
"""


class RedisStore:
    def __init__(
        self, url: str, *, prefix: str, timeout: float, lease_seconds: int, connections: int
    ) -> None:
        self._redis = RedisConnection(url, timeout=timeout, size=connections)
        self._decide = self._redis.client.register_script(DECIDE)
        self._prefix = prefix
        self._lease_ms = lease_seconds * 1000

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    async def decide(self, checks: tuple[Check, ...], slots: Slots | None) -> Decision:
        keys = [self._key(f"{c.key}:{c.window.amount}/{c.window.seconds}") for c in checks]
        args: list[Any] = [len(checks), "1" if slots else "0"]
        for c in checks:
            args += [c.window.amount, c.window.seconds * 1000, c.cost]
        if slots is not None:
            keys.append(self._key(slots.key))
            args += [slots.limit, slots.lease, self._lease_ms]
        try:
            reply = await self._call(lambda: self._decide(keys=keys, args=args))
        except StoreError as e:
            if slots is not None and e.kind == "slow":
                # The script may have run and taken a slot nobody will give back: the request
                # is refused. Give it back now rather than after lease_seconds.
                tasks.spawn(self._release_quietly(slots))
            raise
        allowed, blocked = int(reply[0]), int(reply[1])
        standings = tuple(
            Standing(
                c.window,
                max(0, c.window.amount - int(reply[2 + 2 * i])),
                max(1, math.ceil(int(reply[3 + 2 * i]) / 1000)),
            )
            for i, c in enumerate(checks)
        )
        if allowed:
            return Decision(True, standings)
        if blocked == len(checks) + 1:
            return Decision(False, standings, "concurrent", 1)
        return Decision(
            False, standings, checks[blocked - 1].window.name, standings[blocked - 1].reset
        )

    async def release(self, slots: Slots) -> None:
        await self._call(lambda: self._redis.client.zrem(self._key(slots.key), slots.lease))

    async def _release_quietly(self, slots: Slots) -> None:
        with contextlib.suppress(StoreError):  # else it expires after lease_seconds
            await self.release(slots)

    async def close(self) -> None:
        await self._redis.close()

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await store_call(self._redis, command)


async def store_call(redis: RedisConnection, command: Callable[[], Awaitable[Any]]) -> Any:
    """One Redis call for a store (limits, budgets): a failure is a StoreError."""
    try:
        return await redis.call(command)
    except RedisFailed as e:
        raise StoreError(e.kind, str(e)) from e
