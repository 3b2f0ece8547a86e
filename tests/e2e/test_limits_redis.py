"""Limits shared through a real redis-server: several instances, and Redis dying mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.client import HttpClient
from support.guard import rules
from support.redis_server import RedisServer

MODELS = "/api/openai/models"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def shared_rules(redis: RedisServer, on_error: str = "closed", **limits: object) -> str:
    return rules(
        top={"limits_backend": {"redis": redis.url, "on_error": on_error}},
        defaults={"limits": limits or {"rate": "10/minute"}},
    )


def spread(ports: list[int], count: int) -> list[int]:
    """`count` requests at once, alternating between the instances."""
    start = threading.Barrier(count)

    def one(i: int) -> int:
        with HttpClient(ports[i % len(ports)], keep_alive=False) as c:
            start.wait()
            return c.get(MODELS).status

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_two_instances_share_one_limit(keyrelay_factory, upstream, redis_server) -> None:
    text = shared_rules(redis_server, rate="10/minute", concurrent=50)
    a, b = keyrelay_factory(text), keyrelay_factory(text)
    statuses = spread([a.port, b.port], 50)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 40, statuses
    assert len(upstream.requests) == 10
    # Whichever instance a later request hits, the budget is spent.
    assert HttpClient(a.port).get(MODELS).status == 429
    assert HttpClient(b.port).get(MODELS).status == 429


def test_redis_killed_mid_run_fails_closed(keyrelay_factory, upstream, redis_server) -> None:
    proxy = keyrelay_factory(shared_rules(redis_server, "closed", rate="5/minute"))
    client = HttpClient(proxy.port)
    assert [client.get(MODELS).status for _ in range(3)] == [200, 200, 200]
    redis_server.kill()
    for _ in range(5):
        down = client.get(MODELS)
        assert down.status == 503, down.body
        assert down.json()["type"].endswith("/limits-unavailable")
    assert len(upstream.requests) == 3
    proxy.wait_for_output(r"limits: the store failed")
    assert proxy.alive()
    # Back up (empty: a new process on the same port): decisions resume.
    redis_server.start()
    statuses = [client.get(MODELS).status]
    while statuses[-1] == 503 and len(statuses) < 100:  # keyrelay retries Redis after 1 s
        time.sleep(0.05)
        statuses.append(client.get(MODELS).status)
    statuses += [client.get(MODELS).status for _ in range(5)]
    assert statuses[-6:] == [200] * 5 + [429], statuses
    assert proxy.alive()


def test_redis_killed_mid_run_fails_open(keyrelay_factory, upstream, redis_server) -> None:
    proxy = keyrelay_factory(shared_rules(redis_server, "open", rate="2/minute", concurrent=1))
    client = HttpClient(proxy.port)
    assert [client.get(MODELS).status for _ in range(3)] == [200, 200, 429]
    redis_server.kill()
    assert [client.get(MODELS).status for _ in range(5)] == [200] * 5
    assert proxy.alive()
    proxy.wait_for_output(r"failing open")
