"""addon/redis_client.py against a real redis-server: bursts queue, and only an unreachable
server opens the breaker (a full pool, a hung server and an error reply fail one call)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.redis_server import RedisServer

from addon.config.limits import POOL_SIZE, BackendSpec
from addon.config.model import ConfigError, read
from addon.redis_client import Every, RedisConnection, RedisFailed


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def failure(coroutine: Any) -> RedisFailed:
    with pytest.raises(RedisFailed) as raised:
        run(coroutine)
    return raised.value


def test_a_burst_far_larger_than_the_pool_queues_and_all_succeed(redis_server) -> None:
    async def main() -> tuple[list[int], int]:
        # A generous timeout: this is about queueing, not speed (a loaded machine connects late).
        redis = RedisConnection(redis_server.url, timeout=2.0, size=4)
        try:
            replies = await asyncio.gather(
                *(redis.call(lambda: redis.client.incr("burst")) for _ in range(500))
            )
            opened = len(redis.client.connection_pool._available_connections)
            return sorted(replies), opened
        finally:
            await redis.close()

    replies, opened = run(main())
    assert replies == list(range(1, 501))
    assert opened <= 4


def test_a_pool_that_stands_still_fails_the_call_without_opening_the_breaker(
    redis_server,
) -> None:
    async def main() -> tuple[RedisFailed, str]:
        redis = RedisConnection(redis_server.url, timeout=0.2, size=2)
        pool = redis.client.connection_pool
        try:
            held = [await pool.get_connection() for _ in range(2)]  # nobody gives them back
            try:
                await redis.call(lambda: redis.client.ping())
            except RedisFailed as e:
                busy = e
            for conn in held:
                await pool.release(conn)
            return busy, await redis.call(lambda: redis.client.echo("next"))
        finally:
            await redis.close()

    busy, after = run(main())
    assert busy.kind == "busy" and not busy.outage
    assert after == b"next"  # tried at once: the breaker stayed closed


def test_an_unreachable_server_opens_the_breaker() -> None:
    gone = RedisServer()  # a free port nobody listens on: never started
    calls = []

    async def main() -> tuple[RedisFailed, RedisFailed]:
        redis = RedisConnection(gone.url, timeout=0.2, size=2)
        failures = []
        try:
            for _ in range(2):
                try:
                    await redis.call(lambda: calls.append(1) or redis.client.ping())
                except RedisFailed as e:
                    failures.append(e)
            return failures[0], failures[1]
        finally:
            await redis.close()

    try:
        first, second = run(main())
    finally:
        gone.stop()
    assert first.kind == "unreachable" and first.outage
    assert second.kind == "down" and second.outage
    assert len(calls) == 1  # the second call was answered without asking
    assert "127.0.0.1" not in str(first)  # no address in what gets logged


def test_a_hung_server_fails_calls_as_slow_and_answers_again_once_it_resumes(
    redis_server,
) -> None:
    pid = redis_server._proc.pid if redis_server._proc else 0
    assert pid

    async def main() -> tuple[list[RedisFailed], bytes]:
        redis = RedisConnection(redis_server.url, timeout=0.2, size=2)
        try:
            await redis.call(lambda: redis.client.ping())  # connected before the hang
            os.kill(pid, signal.SIGSTOP)
            try:
                outcomes = await asyncio.gather(
                    *(redis.call(lambda: redis.client.ping()) for _ in range(6)),
                    return_exceptions=True,
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            return outcomes, await redis.call(lambda: redis.client.echo("back"))
        finally:
            await redis.close()

    outcomes, back = run(main())
    assert all(isinstance(o, RedisFailed) for o in outcomes), outcomes
    assert {o.kind for o in outcomes} <= {"slow", "busy"}, outcomes
    assert back == b"back"


def test_a_loop_held_up_by_other_work_does_not_make_a_healthy_redis_fail(redis_server) -> None:
    """Calls whose replies arrive while the loop is busy elsewhere (longer than the timeout)
    are answered: with wall-clock socket timeouts some of these failed as "slow"."""

    async def main() -> list[object]:
        redis = RedisConnection(redis_server.url, timeout=0.2, size=8)
        loop = asyncio.get_running_loop()
        stalls = 0

        def stall() -> None:  # the loop held for 1.5 timeouts, every 50 ms
            nonlocal stalls
            time.sleep(0.3)
            stalls += 1
            loop.call_later(0.05, stall)

        async def one(i: int) -> int:
            await asyncio.sleep(i / 200)  # spread over a second, across several stalls
            return await redis.call(lambda: redis.client.incr("stalled"))

        loop.call_later(0.01, stall)
        try:
            return await asyncio.gather(*map(one, range(200)), return_exceptions=True)
        finally:
            await redis.close()
            assert stalls >= 3, stalls

    outcomes = run(main())
    failed = [o for o in outcomes if not isinstance(o, int)]
    assert not failed, failed
    assert sorted(outcomes) == list(range(1, 201))  # type: ignore[type-var]


def test_an_error_reply_fails_the_call_only(redis_server) -> None:
    async def main() -> tuple[RedisFailed, bytes]:
        redis = RedisConnection(redis_server.url, timeout=0.2, size=POOL_SIZE)
        try:
            await redis.call(lambda: redis.client.set("text", "x"))
            try:
                await redis.call(lambda: redis.client.incr("text"))
            except RedisFailed as e:
                error = e
            return error, await redis.call(lambda: redis.client.get("text"))
        finally:
            await redis.close()

    error, after = run(main())
    assert error.kind == "error" and not error.outage
    assert after == b"x"


def test_every_lets_one_message_per_kind_through() -> None:
    every = Every(60)
    assert [every("busy"), every("busy"), every("slow"), every("busy")] == [
        True,
        False,
        True,
        False,
    ]


def test_the_pool_size_is_configured_under_limits_backend() -> None:
    spec = read(BackendSpec, {"redis": "redis://127.0.0.1:1/0", "connections": 8}, "r.yaml", "b")
    assert spec.connections == 8 and BackendSpec().connections == POOL_SIZE
    with pytest.raises(ConfigError) as e:
        read(BackendSpec, {"connections": 0}, "r.yaml", "limits_backend")
    assert str(e.value).startswith("r.yaml: limits_backend.connections: must be at least 1")
