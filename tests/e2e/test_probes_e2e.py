"""The probes through the real mitmdump: /_keyrelay/live answers while the process does;
/_keyrelay/ready only when it can serve (rules, a key for every provider, Redis where used);
a probe's network may read them and nothing else."""

from __future__ import annotations

import pytest
from support.guard import rules
from support.redis_server import RedisServer


def ready(client: object) -> tuple[int, dict[str, object]]:
    reply = client.get("/_keyrelay/ready")  # type: ignore[attr-defined]
    return int(reply.status), reply.json()


def test_ready_when_every_provider_has_its_key_and_not_before(
    keyrelay_factory, make_client
) -> None:
    client = make_client(keyrelay_factory(rules()).port)
    assert client.get("/_keyrelay/live").status == 200
    checks = {"serving": True, "rules": True, "keys": True}
    assert ready(client) == (200, {"status": "ready", "checks": checks})
    keyless = make_client(keyrelay_factory(rules(), env={"FAL_KEY": None}).port)
    status, body = ready(keyless)
    assert status == 503 and body["checks"] == {**checks, "keys": False}


def test_ready_asks_redis_where_the_rules_use_it(keyrelay_factory, make_client) -> None:
    with RedisServer() as redis:
        backend = {"limits_backend": {"redis": redis.url}}
        client = make_client(keyrelay_factory(rules(top=backend)).port)
        assert ready(client)[0] == 200
        redis.kill()
        status, body = ready(client)
        assert status == 503 and body["checks"]["redis"] is False  # type: ignore[index]


@pytest.mark.parametrize("probes", [["127.0.0.1/32"], []])
def test_a_probe_network_reads_the_probes_and_nothing_else(
    keyrelay_factory, make_client, probes: list[str]
) -> None:
    admin = {"admin": {"loopback": False, "probes": probes}}
    client = make_client(keyrelay_factory(rules(top=admin)).port)
    expected = 200 if probes else 403
    assert client.get("/_keyrelay/live").status == expected
    assert client.get("/_keyrelay/ready").status == expected
    assert client.get("/_keyrelay/metrics").status == 403  # not opened by `probes`
    assert client.get("/_keyrelay/health").status == 403
