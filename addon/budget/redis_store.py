"""The shared books: Redis, one EVALSHA per reservation and one per settlement, so any number of
keyrelay instances reserve against the same figures exactly (the script runs atomically)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from addon.budget.books import Account, entries, non_negative
from addon.ratelimit.redis_store import store_call
from addon.redis_client import RedisConnection

# KEYS: the accounts. ARGV: amount, provider, then per account: ttl s, limit, provider limit
# (-1: none). Returns 0, or the 1-based account that cannot cover the amount. Same rule as
# books.fits.
RESERVE = """
local amount, p = tonumber(ARGV[1]), ARGV[2]
for i = 1, #KEYS do
  local limit, plimit = tonumber(ARGV[3*i + 1]), tonumber(ARGV[3*i + 2])
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved', 'spent:' .. p, 'reserved:' .. p)
  local held = tonumber(v[1] or '0') + tonumber(v[2] or '0')
  local pheld = tonumber(v[3] or '0') + tonumber(v[4] or '0')
  if limit >= 0 and (held >= limit or held + amount > limit) then return i end
  if plimit >= 0 and (pheld >= plimit or pheld + amount > plimit) then return i end
end
for i = 1, #KEYS do
  if amount > 0 then
    redis.call('HINCRBY', KEYS[i], 'reserved', amount)
    redis.call('HINCRBY', KEYS[i], 'reserved:' .. p, amount)
  end
  redis.call('EXPIRE', KEYS[i], ARGV[3*i])
end
return 0
"""

# KEYS: the accounts. ARGV: each account's ttl s, then field, increment pairs.
SETTLE = """
local n = #KEYS
for i = 1, n do
  for j = n + 1, #ARGV, 2 do
    local by = tonumber(ARGV[j + 1])
    -- A reservation made before Redis lost its data is released to 0, never below.
    if by ~= 0 and redis.call('HINCRBY', KEYS[i], ARGV[j], by) < 0 then
      redis.call('HSET', KEYS[i], ARGV[j], 0)
    end
  end
  redis.call('EXPIRE', KEYS[i], ARGV[i])
end
return 0
"""


class RedisBooks:
    def __init__(self, url: str, *, prefix: str, timeout: float, connections: int) -> None:
        self._redis = RedisConnection(url, timeout=timeout, size=connections)
        self._reserve = self._redis.client.register_script(RESERVE)
        self._settle = self._redis.client.register_script(SETTLE)
        self._prefix = f"{prefix}:budget:"

    async def reserve(self, accounts: tuple[Account, ...], provider: str, amount: int) -> int:
        non_negative(amount)
        keys = [self._prefix + a.key for a in accounts]
        args: list[Any] = [amount, provider]
        for a in accounts:
            args += [a.ttl, _limit(a.limit), _limit(a.provider_limit)]
        return int(await self._call(lambda: self._reserve(keys=keys, args=args)))

    async def settle(
        self, accounts: tuple[Account, ...], provider: str, reserved: int, spent: int
    ) -> None:
        non_negative(reserved, spent)
        keys = [self._prefix + a.key for a in accounts]
        args: list[Any] = [a.ttl for a in accounts]
        for name, n in entries(provider, reserved, spent).items():
            args += [name, n]
        await self._call(lambda: self._settle(keys=keys, args=args))

    async def read(self, keys: tuple[str, ...]) -> list[dict[str, int]]:
        async def all_of() -> list[dict[str, int]]:
            out = []
            for key in keys:
                raw = await self._redis.client.hgetall(self._prefix + key)
                out.append({_text(k): int(v) for k, v in raw.items()})
            return out

        result: list[dict[str, int]] = await self._call(all_of)
        return result

    async def close(self) -> None:
        await self._redis.close()

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await store_call(self._redis, command)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
