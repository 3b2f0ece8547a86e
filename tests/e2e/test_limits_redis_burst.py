"""Bursts through one keyrelay against a real redis-server: a few hundred admissions at once
queue for a Redis connection instead of failing, and an exhausted pool never passes for an
outage (which would answer 503 to everyone for a while)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.client import HttpClient
from support.guard import rules
from support.redis_server import RedisServer

MODELS = "/api/openai/models"
BURST = 300
# All from 127.0.0.1 at once: past the per-address connection cap (256), which is not under test.
ONE_ADDRESS = ("--set", f"keyrelay_max_connections_per_address={BURST}")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def burst(port: int, count: int) -> Counter[int]:
    """`count` requests released at once, each on its own connection: how many got each status."""
    start = threading.Barrier(count)

    def one(_: int) -> int:
        with HttpClient(port, keep_alive=False, timeout=60) as c:
            start.wait()
            return c.get(MODELS).status

    with ThreadPoolExecutor(count) as pool:
        return Counter(pool.map(one, range(count)))


def redis_rules(redis: RedisServer, **backend: object) -> str:
    limits = {"rate": f"{BURST * 10}/minute", "concurrent": BURST * 10}
    return rules(
        top={"limits_backend": {"redis": redis.url, **backend}}, defaults={"limits": limits}
    )


def test_a_burst_against_a_generous_limit_all_pass(
    keyrelay_factory, upstream, redis_server
) -> None:
    proxy = keyrelay_factory(redis_rules(redis_server), extra_args=ONE_ADDRESS)
    statuses = burst(proxy.port, BURST)
    assert statuses == {200: BURST}, (statuses, proxy.output()[-6000:])
    assert len(upstream.requests) == BURST
    assert "limits: the store failed" not in proxy.output()


def test_a_burst_against_a_limit_of_n_admits_exactly_n(
    keyrelay_factory, upstream, redis_server
) -> None:
    text = rules(
        top={"limits_backend": {"redis": redis_server.url}},
        defaults={"limits": {"rate": "120/minute"}},
    )
    proxy = keyrelay_factory(text, extra_args=ONE_ADDRESS)
    statuses = burst(proxy.port, BURST)
    assert statuses == {200: 120, 429: BURST - 120}, statuses
    assert len(upstream.requests) == 120


def test_a_burst_through_a_key_pool_with_redis_cool_downs_all_pass(
    keyrelay_factory, upstream, redis_server
) -> None:
    # Every pick reads the pool's cool-downs from Redis: the key sources' own connection pool.
    keys = {"POOL_KEY_A": "pool-key-a-1f2e3d", "POOL_KEY_B": "pool-key-b-4c5b6a"}
    pool = {"keys": [{"env": name} for name in keys]}
    credential = {"header": "authorization", "format": "Bearer {key}", "pool": pool}
    text = rules(
        top={"limits_backend": {"redis": redis_server.url}}, openai={"credential": credential}
    )
    proxy = keyrelay_factory(text, env=keys, extra_args=ONE_ADDRESS)
    statuses = burst(proxy.port, BURST)
    assert statuses == {200: BURST}, statuses
    sent = Counter(r.header("authorization") for r in upstream.requests)
    assert sent == {f"Bearer {v}": BURST // 2 for v in keys.values()}, sent
    assert "Redis failed" not in proxy.output()
