"""The one way keyrelay talks to Redis (shared rate limits, pool cool-downs, tenant tables).

A bounded pool that a burst queues on: redis-py's default pool raises as soon as more commands
are in flight than it has connections (MaxConnectionsError, a ConnectionError), so a few hundred
admissions at once looked like Redis going down. Here a command waits its turn for one of
`size` connections (see QueuedPool for how long).

Failures are sorted, because only one kind means the server is gone:
- "unreachable": connecting failed, or the connection broke and a fresh one failed too. Opens
  the breaker: for DOWN_FOR seconds calls fail at once ("down") instead of each waiting on a
  dead server.
- "busy" (no connection free in time), "slow" (no answer in time), "error" (Redis answered
  with an error): this call fails, the next one tries again. Timeouts are the symptom of a
  loaded proxy as much as of a dead server, and must not refuse everyone for a while.

Every wait here (for a pooled connection, a connect, a reply) is a StallTolerantTimeout, not
redis-py's wall-clock socket timeouts: a burst that holds keyrelay's own event loop must not
make a healthy Redis look slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from addon.stall_timeout import StallTolerantTimeout

T = TypeVar("T")
Kind = Literal["down", "unreachable", "busy", "slow", "error"]

DOWN_FOR = 1.0  # seconds calls fail at once after Redis was found unreachable
PATIENCE = 10  # the longest wait for a connection, in decision timeouts, while the queue moves


class RedisFailed(Exception):
    """A call Redis did not answer. The message names the kind and an error type, never an
    address or a value."""

    def __init__(self, kind: Kind, error: str) -> None:
        super().__init__(f"{kind}: {error}")
        self.kind = kind

    @property
    def outage(self) -> bool:
        """Redis itself is unreachable, as opposed to this one call failing."""
        return self.kind in ("down", "unreachable")


class PoolTimeout(RedisError):
    """No pooled connection came free in time while Redis was not answering."""


class QueuedPool(aioredis.BlockingConnectionPool):
    """A BlockingConnectionPool whose waiters give up only when the queue stands still.

    A burst is queued behind this process's own work as much as behind Redis: with a few
    hundred requests arriving together the event loop itself runs late, and a fixed wait
    failed requests that were merely in line. So a waiter whose `wait` ran out waits on while
    commands keep getting their answers in that time, and gives up (PoolTimeout, told apart
    from a failed connect, which is a ConnectionError) when none did, or after `patience`
    seconds in all."""

    def __init__(self, *, wait: float, patience: float, **kwargs: Any) -> None:
        super().__init__(timeout=None, **kwargs)  # the wait is ours, below
        self.wait, self.patience = wait, patience
        self.answered = 0  # connections given back still connected: their command succeeded

    async def release(self, connection: Any) -> None:
        if connection.is_connected:  # redis-py disconnects a connection whose command failed
            self.answered += 1
        await super().release(connection)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        give_up = time.monotonic() + self.patience
        while True:
            answered = self.answered
            try:
                async with StallTolerantTimeout(self.wait, self.patience):
                    return await super().get_connection(*args, **kwargs)
            except TimeoutError as e:
                if self.answered == answered or time.monotonic() >= give_up:
                    raise PoolTimeout("PoolTimeout") from e


class StallTolerantIO(AbstractConnection):
    """Mixed into the pool's connection class (see stall_tolerant): connects and reads are
    bounded by a StallTolerantTimeout of `io_timeout` seconds, and time out as redis-py's own
    timeouts do (redis.exceptions.TimeoutError, the connection dropped)."""

    io_timeout = 0.5

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        async with self._bounded():
            await super().connect_check_health(*args, **kwargs)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is not None or len(args) > 1:  # the caller's own timeout
            return await super().read_response(*args, **kwargs)
        async with self._bounded():
            return await super().read_response(*args, **kwargs)

    def _bounded(self) -> contextlib.AbstractAsyncContextManager[None]:
        return _redis_timeout(self.io_timeout)


@contextlib.asynccontextmanager
async def _redis_timeout(seconds: float) -> AsyncIterator[None]:
    try:
        async with StallTolerantTimeout(seconds, seconds * PATIENCE):
            yield
    except TimeoutError as e:  # the builtin one: ours (redis-py's own is not an OSError)
        raise RedisTimeoutError(f"no answer in {seconds:g} s") from e


def stall_tolerant(base: type[AbstractConnection], seconds: float) -> type[AbstractConnection]:
    """`base` (redis-py's plain, TLS or Unix connection, as the URL chose) with StallTolerantIO."""
    return type(f"StallTolerant{base.__name__}", (StallTolerantIO, base), {"io_timeout": seconds})


class RedisConnection:
    """One client (with its own pool and breaker) for one part of keyrelay."""

    def __init__(
        self, url: str, *, timeout: float, size: int, decode_responses: bool = False
    ) -> None:
        pool = QueuedPool.from_url(
            url,
            max_connections=size,
            wait=timeout,  # a waiter gives up after this long without any answer...
            patience=timeout * PATIENCE,  # ...or after this long in all
            socket_timeout=None,  # connects and reads: StallTolerantIO's, of `timeout`
            socket_connect_timeout=None,
            # One fresh connection after a broken one: a pooled connection outlived a Redis
            # restart. A timeout is not retried: a request would wait twice for a hung server.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
            decode_responses=decode_responses,
        )
        pool.connection_class = stall_tolerant(pool.connection_class, timeout)
        self.client: Any = aioredis.Redis.from_pool(pool)
        self.timeout = timeout
        self._down_until = 0.0

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run `command()` (one client call); RedisFailed if Redis did not answer. `command` is
        not called at all while the breaker is open."""
        if time.monotonic() < self._down_until:
            raise RedisFailed("down", "not asking again yet")
        try:
            # Each wait above bounds its own step; this bounds the whole (queue, connect, NOSCRIPT
            # reload and retry) in case a step has none.
            return await asyncio.wait_for(command(), self.timeout * (PATIENCE + 4))
        except (PoolTimeout, MaxConnectionsError) as e:
            raise RedisFailed("busy", type(e).__name__) from e
        except (RedisTimeoutError, TimeoutError) as e:
            raise RedisFailed("slow", type(e).__name__) from e
        except (RedisConnectionError, OSError) as e:
            self._down_until = time.monotonic() + DOWN_FOR
            raise RedisFailed("unreachable", type(e).__name__) from e
        except RedisError as e:
            raise RedisFailed("error", type(e).__name__) from e

    async def close(self) -> None:
        await self.client.aclose()


class Every:
    """Lets a message through at most once per `seconds` per kind: a failure storm becomes a
    log line now and then, not one per request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def __call__(self, kind: str) -> bool:
        now, last = time.monotonic(), self._last.get(kind)
        if last is not None and now - last < self.seconds:
            return False
        self._last[kind] = now
        return True
