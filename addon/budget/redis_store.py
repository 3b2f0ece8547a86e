"""The shared books: Redis, one EVALSHA per reservation and one per settlement, so any number of
keyrelay instances reserve against the same figures exactly (each script runs atomically).

An account is three keys in one Redis Cluster slot (its hash tag): the hash of figures, a sorted
set of lease ids by expiry, and a hash of each lease's `<amount> <provider> <r|c>` (released or
charged on expiry; `~<id>`: what a job's expiry charged). Expired leases are dealt with before
anything reads or writes the account. The time is the caller's (instances' clocks agree to far
better than a lease's minutes). The ranking of spend per period is another key, written after
the script (another slot).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from addon.budget.books import (
    LEASE_SECONDS,
    Account,
    Lease,
    non_negative,
    rank_key,
)
from addon.ratelimit.redis_store import store_call
from addon.redis_client import RedisConnection

# Each script: KEYS are three per account (figures, leases, held); ARGV[1] is the time now.
# It returns a list whose first item is its answer and whose next are what each account was
# charged (for the ranking).
_PRELUDE = """
local now = tonumber(ARGV[1])
local n = #KEYS / 3
local function add(h, p, released, spent)
  if released ~= 0 then
    for _, f in ipairs({'reserved', 'reserved:' .. p}) do
      -- A reservation made before Redis lost its data is released to 0, never below.
      if redis.call('HINCRBY', h, f, -released) < 0 then redis.call('HSET', h, f, 0) end
    end
  end
  if spent ~= 0 then
    redis.call('HINCRBY', h, 'spent', spent)
    redis.call('HINCRBY', h, 'spent:' .. p, spent)
  end
end
local function expire(i)
  local h, z, d = KEYS[3*i - 2], KEYS[3*i - 1], KEYS[3*i]
  local charged = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    local held = redis.call('HGET', d, id)
    if held then
      local amount, p, mode = string.match(held, '^(%d+) (.+) ([rc])$')
      amount = tonumber(amount)
      if mode == 'c' then
        add(h, p, amount, amount)
        redis.call('HSET', d, '~' .. id, amount)
        charged = charged + amount
      else
        add(h, p, amount, 0)
      end
      redis.call('HDEL', d, id)
    end
    redis.call('ZREM', z, id)
  end
  return charged
end
local function keep(i, ttl)
  for j = 3*i - 2, 3*i do redis.call('EXPIRE', KEYS[j], ttl) end
end
local out = {0}
for i = 1, n do out[i + 1] = expire(i) end
"""

# ARGV: now, amount, provider, lease id, lease end, r|c, then per account: ttl, limit,
# provider limit (-1: none). Answer: 0, or the 1-based account that cannot cover the amount
# (same rule as books.fits).
RESERVE = (
    _PRELUDE
    + """
local amount, p, id, ends, mode = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
for i = 1, n do
  local limit, plimit = tonumber(ARGV[3*i + 5]), tonumber(ARGV[3*i + 6])
  local v = redis.call('HMGET', KEYS[3*i - 2], 'spent', 'reserved', 'spent:' .. p, 'reserved:' .. p)
  local held = tonumber(v[1] or '0') + tonumber(v[2] or '0')
  local pheld = tonumber(v[3] or '0') + tonumber(v[4] or '0')
  if (limit >= 0 and (held >= limit or held + amount > limit))
      or (plimit >= 0 and (pheld >= plimit or pheld + amount > plimit)) then
    out[1] = i
    return out
  end
end
for i = 1, n do
  if amount > 0 then
    add(KEYS[3*i - 2], p, -amount, 0)
    redis.call('ZADD', KEYS[3*i - 1], ends, id)
    redis.call('HSET', KEYS[3*i], id, amount .. ' ' .. p .. ' ' .. mode)
  end
  keep(i, ARGV[3*i + 4])
end
return out
"""
)

# ARGV: now, provider, lease id ('' none), spent, then per account: ttl.
SETTLE = (
    _PRELUDE
    + """
local p, id, spent = ARGV[2], ARGV[3], tonumber(ARGV[4])
for i = 1, n do
  local h, z, d = KEYS[3*i - 2], KEYS[3*i - 1], KEYS[3*i]
  local released, already = 0, 0
  if id ~= '' then
    local held = redis.call('HGET', d, id)
    if held then
      released = tonumber(string.match(held, '^(%d+)'))
      redis.call('HDEL', d, id)
      redis.call('ZREM', z, id)
    else
      already = tonumber(redis.call('HGET', d, '~' .. id) or '0')
      redis.call('HDEL', d, '~' .. id)
    end
  end
  local cost = math.max(0, spent - already)
  add(h, p, released, cost)
  out[i + 1] = out[i + 1] + cost
  keep(i, ARGV[4 + i])
end
return out
"""
)

# ARGV: now, new end, then the lease ids. The leases still held end later.
RENEW = (
    _PRELUDE
    + """
for i = 1, n do
  for j = 3, #ARGV do redis.call('ZADD', KEYS[3*i - 1], 'XX', ARGV[2], ARGV[j]) end
end
return out
"""
)

# ARGV: now, the flow's lease id, the job's lease id, its end. Answer: 1 when it was held.
RETAIN = (
    _PRELUDE
    + """
for i = 1, n do
  local z, d = KEYS[3*i - 1], KEYS[3*i]
  local held = redis.call('HGET', d, ARGV[2])
  if held then
    redis.call('HDEL', d, ARGV[2])
    redis.call('ZREM', z, ARGV[2])
    redis.call('HSET', d, ARGV[3], (string.gsub(held, '[rc]$', 'c')))
    redis.call('ZADD', z, ARGV[4], ARGV[3])
    out[1] = 1
  end
end
return out
"""
)


# ARGV: now, the flow's lease id, then per job: its lease id, its end, its amount. Answer: 1
# when the flow's lease was held; what the jobs do not take of it is released.
DIVIDE = (
    _PRELUDE
    + """
for i = 1, n do
  local h, z, d = KEYS[3*i - 2], KEYS[3*i - 1], KEYS[3*i]
  local held = redis.call('HGET', d, ARGV[2])
  if held then
    local left, p = string.match(held, '^(%d+) (.+) [rc]$')
    left = tonumber(left)
    redis.call('HDEL', d, ARGV[2])
    redis.call('ZREM', z, ARGV[2])
    for j = 3, #ARGV, 3 do
      local part = math.min(tonumber(ARGV[j + 2]), left)
      if part > 0 then
        redis.call('HSET', d, ARGV[j], part .. ' ' .. p .. ' c')
        redis.call('ZADD', z, ARGV[j + 1], ARGV[j])
        left = left - part
      end
    end
    add(h, p, left, 0)
    out[1] = 1
  end
end
return out
"""
)


class RedisBooks:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout: float,
        connections: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = RedisConnection(url, timeout=timeout, size=connections)
        client = self._redis.client
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("reserve", RESERVE),
                ("settle", SETTLE),
                ("renew", RENEW),
                ("retain", RETAIN),
                ("divide", DIVIDE),
            )
        }
        self._prefix = f"{prefix}:budget:"
        self._clock = clock

    async def reserve(
        self, accounts: tuple[Account, ...], provider: str, amount: int, lease: Lease
    ) -> int:
        non_negative(amount)
        ends = self._clock() + lease.seconds
        args: list[Any] = [amount, provider, lease.id, ends, "c" if lease.charge else "r"]
        for a in accounts:
            args += [a.ttl, _limit(a.limit), _limit(a.provider_limit)]
        return await self._run("reserve", accounts, args)

    async def settle(
        self, accounts: tuple[Account, ...], provider: str, lease: str | None, spent: int
    ) -> None:
        non_negative(spent)
        args = [provider, lease or "", spent, *(a.ttl for a in accounts)]
        await self._run("settle", accounts, args)

    async def renew(self, accounts: tuple[Account, ...], leases: tuple[str, ...]) -> None:
        await self._run("renew", accounts, [self._clock() + LEASE_SECONDS, *leases])

    async def retain(self, accounts: tuple[Account, ...], lease: str, job: Lease) -> bool:
        ends = self._clock() + job.seconds
        return bool(await self._run("retain", accounts, [lease, job.id, ends]))

    async def divide(
        self, accounts: tuple[Account, ...], lease: str, jobs: tuple[tuple[Lease, int], ...]
    ) -> bool:
        now = self._clock()
        args: list[Any] = [lease]
        for job, amount in jobs:
            args += [job.id, now + job.seconds, amount]
        return bool(await self._run("divide", accounts, args))

    async def top(self, period: str, n: int) -> list[tuple[str, int]]:
        key = self._prefix + rank_key(period)
        raw = await self._call(lambda: self._redis.client.zrevrange(key, 0, n - 1, withscores=True))
        return [(_text(who), int(spent)) for who, spent in raw]

    async def read(self, keys: tuple[str, ...]) -> list[dict[str, int]]:
        """The figures as they stand: an expired lease is still counted until the account's
        next write (a read writes nothing)."""

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

    async def _run(self, script: str, accounts: tuple[Account, ...], args: list[Any]) -> int:
        """One script over the accounts' keys; its answer. What it charged is ranked after."""
        keys = []
        for a in accounts:
            figures = self._prefix + a.key
            keys += [figures, f"{figures}:leases", f"{figures}:held"]
        run = self._scripts[script]
        out = await self._call(lambda: run(keys=keys, args=[self._clock(), *args]))
        await self._rank(accounts, [int(x) for x in out[1:]])
        return int(out[0])

    async def _rank(self, accounts: Sequence[Account], charged: Sequence[int]) -> None:
        ranked = [(a, c) for a, c in zip(accounts, charged, strict=True) if c and a.period]
        if not ranked:
            return

        async def write() -> None:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for account, cost in ranked:
                    key = self._prefix + rank_key(account.period)
                    pipe.zincrby(key, cost, account.identity)
                    pipe.expire(key, account.ttl)
                await pipe.execute()

        await self._call(write)

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await store_call(self._redis, command)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
