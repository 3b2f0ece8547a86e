"""Rate limits through the real mitmdump with the embedded (in-memory) store."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families
from support.client import HttpClient
from support.guard import rules

MODELS = "/api/openai/models"


def burst(port: int, count: int, path: str = MODELS) -> list[int]:
    """`count` requests at once, each on its own connection; their statuses."""
    start = threading.Barrier(count)

    def one(_: int) -> int:
        with HttpClient(port, keep_alive=False) as c:
            start.wait()
            return c.get(path).status

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_fifty_at_once_against_ten_exactly_ten_pass(keyrelay_factory, upstream) -> None:
    proxy = keyrelay_factory(rules(defaults={"limits": {"rate": "10/minute"}}))
    statuses = burst(proxy.port, 50)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 40, statuses
    assert len(upstream.requests) == 10
    # ...and the rate-limit hits are counted in the metrics, per provider.
    with HttpClient(proxy.port) as c:
        text = c.get("/_keyrelay/metrics").body.decode()
    hits = [
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "keyrelay_rate_limited"
        for s in f.samples
        if s.name.endswith("_total") and s.labels == {"provider": "openai"}
    ]
    assert hits == [40]


def test_429_problem_with_retry_after_and_ratelimit_fields(keyrelay_factory, make_client) -> None:
    proxy = keyrelay_factory(rules(openai={"limits": {"rate": "2/minute", "daily": 100}}))
    client = make_client(proxy.port)
    assert [client.get(MODELS).status for _ in range(2)] == [200, 200]
    limited = client.get(MODELS)
    assert limited.status == 429
    problem = limited.json()
    assert problem["type"].endswith("/rate-limited") and problem["status"] == 429
    assert 1 <= int(limited.header("retry-after") or 0) <= 60
    assert limited.header("ratelimit-policy") == '"rate";q=2;w=60, "daily";q=100;w=86400'
    current = limited.header("ratelimit") or ""
    assert current.startswith('"rate";r=0;t=') and '"daily";r=98;t=' in current
    # A request refused by one counter is not charged to the others: daily still has 98 left.
    assert '"daily";r=98;' in (client.get(MODELS).header("ratelimit") or "")
    # The limit is per provider: fal is not limited.
    run = {"x-fal-target-url": "https://fal.run/fal-ai/flux/dev"}
    assert client.post("/api/fal/proxy", b"{}", headers=run).status == 200


def test_fal_status_polls_do_not_eat_the_submission_budget(keyrelay_factory, make_client) -> None:
    limits = {
        "rate": "2/minute",
        "endpoints": [
            {
                "match": ["queue.fal.run/*/*/requests/**"],
                "methods": ["GET"],
                "cost": 0,
                "rate": "20/minute",
            }
        ],
    }
    proxy = keyrelay_factory(rules(fal={"limits": limits}))
    client = make_client(proxy.port)

    def fal(method: str, url: str) -> int:
        return client.request(
            method,
            "/api/fal/proxy",
            b"{}" if method == "POST" else None,
            headers={"x-fal-target-url": url, "content-type": "application/json"},
        ).status

    status = (
        "https://queue.fal.run/fal-ai/flux/requests/0b6c2a1e-4f3d-4e2a-9c1b-7a8d9e0f1a2b/status"
    )
    submit = "https://queue.fal.run/fal-ai/flux/dev"
    assert [fal("GET", status) for _ in range(10)] == [200] * 10
    assert [fal("POST", submit) for _ in range(2)] == [200, 200]
    assert fal("POST", submit) == 429
    assert [fal("GET", status) for _ in range(10)] == [200] * 10
    assert fal("GET", status) == 429  # the polls' own budget: 20 a minute


def test_concurrent_open_requests_are_limited_and_released(
    keyrelay_factory, make_client, upstream
) -> None:
    release = threading.Event()

    def slow(_req, w) -> None:  # type: ignore[no-untyped-def]
        w.send_head(200, [("content-type", "text/event-stream")], chunked=True)
        w.write_chunk(b"data: started\n\n")
        release.wait(10)
        w.end()

    upstream.route("GET", "/v1/slow", slow)
    proxy = keyrelay_factory(rules(defaults={"limits": {"concurrent": 2}}))
    streams = [make_client(proxy.port) for _ in range(2)]
    responses = [c.open("GET", "/api/openai/slow") for c in streams]
    assert [r.status for r in responses] == [200, 200]
    third = make_client(proxy.port).get(MODELS)
    assert third.status == 429 and third.header("retry-after") == "1"
    release.set()
    for r in responses:
        r.read()
    upstream.wait_for_requests(2)
    # Slots come back when a stream ends (response hook) or the client goes away (error hook).
    statuses = []
    for _ in range(50):
        statuses.append(make_client(proxy.port).get(MODELS).status)
        if statuses[-1] == 200:
            break
        time.sleep(0.02)  # the slot is given back just after the response went out
    assert statuses[-1] == 200, statuses
