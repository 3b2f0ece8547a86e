"""Where keys come from, through the real mitmdump against the local upstream, which records the
key it received: secret files rotated while running, slow and failing key commands, per-tenant
keys served concurrently, and a key pool whose rate-limited key rests and comes back."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.client import HttpClient
from support.guard import AUDIENCE, HS_SECRET, ISSUER, hs_token, rules, token_entry
from support.redis_server import RedisServer
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, echo

from addon.keys.ids import key_id

CHAT = "/api/openai/chat/completions"
FAL = ("x-fal-target-url", "https://fal.run/fal-ai/flux/dev")


def openai_credential(**credential: Any) -> dict[str, Any]:
    return {"credential": {"header": "authorization", "format": "Bearer {key}", **credential}}


def sent_key(request: RecordedRequest) -> str | None:
    value = request.header("authorization")
    return value.removeprefix("Bearer ") if value else None


def replace_file(path: Path, text: str) -> None:
    """Swap the file in one step, as Kubernetes and Vault agents do (write aside, rename)."""
    aside = path.with_name(f".{path.name}.new")
    aside.write_text(text)
    os.replace(aside, path)


def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return result


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text("import sys, time, pathlib\n" + body)
    return [sys.executable, str(path)]


# -- files ------------------------------------------------------------------------------------


def test_a_secret_file_rotated_while_running_is_picked_up(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    secret = tmp_path / "openai-key"
    secret.write_text("file-key-one-7a1c\n")
    proxy = keyrelay_factory(rules(openai=openai_credential(key={"file": str(secret)})))
    with HttpClient(proxy.port) as c:
        assert c.post(CHAT, json={}).status == 200
        assert sent_key(upstream.only_request()) == "file-key-one-7a1c"

        replace_file(secret, "file-key-two-93be\n")

        def rotated() -> bool:
            upstream.clear_requests()
            assert c.post(CHAT, json={}).status == 200
            return sent_key(upstream.only_request()) == "file-key-two-93be"

        until(rotated)
        proxy.wait_for_output(r"openai: new key from .*openai-key \(key id \w{8} -> \w{8}\)")

        secret.unlink()  # broken later: the last good key stays
        time.sleep(1.5)
        upstream.clear_requests()
        assert c.post(CHAT, json={}).status == 200
        assert sent_key(upstream.only_request()) == "file-key-two-93be"
    proxy.wait_for_output(r"openai-key cannot be read: .*\(keeping the previous key\)")
    assert "file-key-" not in proxy.output()


def test_a_missing_secret_file_is_a_503_and_other_providers_work(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    proxy = keyrelay_factory(
        rules(openai=openai_credential(key={"file": str(tmp_path / "absent")}))
    )
    assert "openai has no key: set its key file (absent)" in proxy.output()
    with HttpClient(proxy.port) as c:
        reply = c.post(CHAT, json={})
        assert reply.status == 503
        assert reply.json()["type"].endswith("/key-not-configured")
        assert str(tmp_path) not in reply.text  # no internal path for the client
        assert upstream.requests == []
        assert c.request("POST", "/api/fal/proxy", b"{}", [FAL]).status == 200


# -- commands ---------------------------------------------------------------------------------


def test_a_slow_command_is_waited_for_once_and_never_per_request(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    value = tmp_path / "value"
    value.write_text("command-key-one-51d0")
    delay = 2.0
    command = script(
        tmp_path, "slow.py", f"time.sleep({delay})\nprint(pathlib.Path({str(value)!r}).read_text())"
    )
    proxy = keyrelay_factory(
        rules(openai=openai_credential(key={"command": command, "refresh": 1, "timeout": 10}))
    )
    with HttpClient(proxy.port) as c:
        assert c.post(CHAT, json={}).status == 200  # may wait for the first run, only that
        assert sent_key(upstream.only_request()) == "command-key-one-51d0"

        value.write_text("command-key-two-c3e8")
        durations = []
        seen: set[str | None] = set()
        deadline = time.monotonic() + 15
        while "command-key-two-c3e8" not in seen:
            assert time.monotonic() < deadline, "the refreshed key never arrived"
            upstream.clear_requests()
            start = time.monotonic()
            assert c.post(CHAT, json={}).status == 200
            durations.append(time.monotonic() - start)
            seen.add(sent_key(upstream.only_request()))
            time.sleep(0.2)
    # The command ran (slowly) in the background the whole time; no request waited for it.
    assert len(durations) >= 3
    assert max(durations) < delay / 2, durations
    assert "command-key-" not in proxy.output()


def test_a_failing_command_is_a_503_and_one_failing_later_keeps_its_last_key(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    flaky = script(
        tmp_path,
        "flaky.py",
        f"if pathlib.Path({str(broken)!r}).exists(): sys.exit(3)\nprint('fal-command-key-0b9e')",
    )
    always_fails = script(tmp_path, "fails.py", "print('half-written-key-x'); sys.exit(1)")
    proxy = keyrelay_factory(
        rules(
            openai=openai_credential(key={"command": always_fails}),
            fal={
                "credential": {
                    "header": "authorization",
                    "format": "Key {key}",
                    "key": {"command": flaky, "refresh": 1},
                }
            },
        )
    )
    with HttpClient(proxy.port) as c:
        reply = c.post(CHAT, json={})
        assert reply.status == 503
        assert reply.json()["type"].endswith("/key-not-configured")
        proxy.wait_for_output(r"openai: the command python\S* exited with status 1 \(no key yet\)")

        assert c.request("POST", "/api/fal/proxy", b"{}", [FAL]).status == 200
        assert upstream.only_request().header("authorization") == "Key fal-command-key-0b9e"

        broken.touch()
        proxy.wait_for_output(
            r"fal: the command python\S* exited with status 3 \(keeping the previous key\)"
        )
        upstream.clear_requests()
        assert c.request("POST", "/api/fal/proxy", b"{}", [FAL]).status == 200
        assert upstream.only_request().header("authorization") == "Key fal-command-key-0b9e"
    output = proxy.output()
    assert "half-written-key-x" not in output and "fal-command-key-0b9e" not in output


# -- tenants ----------------------------------------------------------------------------------

TENANT_KEYS = {"alice": "alice-own-key-1f2e3d", "bob": "bob-own-key-9c8b7a"}
TOKENS = {"alice": "alice-token-x1", "bob": "bob-token-y2", "carol": "carol-token-z3"}


def tenant_rules(tmp_path: Path, tenants: dict[str, Any], **top: Any) -> tuple[str, dict[str, str]]:
    entries = ",".join(token_entry(name, token) for name, token in TOKENS.items())
    text = rules(
        defaults={"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        openai=openai_credential(tenants=tenants),
        top=top or None,
    )
    return text, {"KR_TOKENS": entries}


def test_two_tenants_served_concurrently_each_get_only_their_own_key(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    table = tmp_path / "tenant-keys.yaml"
    table.write_text(yaml.safe_dump(TENANT_KEYS))
    text, env = tenant_rules(tmp_path, {"file": str(table)})
    proxy = keyrelay_factory(text, env=env)

    rounds = 25
    start = threading.Barrier(2)

    def calls(who: str) -> list[int]:
        statuses = []
        with HttpClient(proxy.port) as c:
            start.wait()
            for i in range(rounds):
                headers = [("authorization", f"Bearer {TOKENS[who]}"), ("x-test-who", who)]
                statuses.append(c.post(CHAT, json={"i": i}, headers=headers).status)
        return statuses

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(("alice", "bob"), pool.map(calls, ("alice", "bob")), strict=True))
    assert results == {"alice": [200] * rounds, "bob": [200] * rounds}
    received = upstream.wait_for_requests(2 * rounds)
    for request in received:
        assert sent_key(request) == TENANT_KEYS[request.header("x-test-who") or "?"]
    assert {r.header("x-test-who") for r in received} == {"alice", "bob"}

    # A tenant without a key of its own is refused (fallback: refuse), never given another's.
    with HttpClient(proxy.port) as c:
        reply = c.post(CHAT, json={}, headers=[("authorization", f"Bearer {TOKENS['carol']}")])
    assert reply.status == 403
    assert reply.json()["type"].endswith("/no-tenant-key")
    assert len(upstream.requests) == 2 * rounds
    output = proxy.output()
    assert TENANT_KEYS["alice"] not in output and TENANT_KEYS["bob"] not in output


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_tenant_keys_from_a_redis_hash_with_a_shared_fallback(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.hset("tenant-keys:openai", mapping={"alice": TENANT_KEYS["alice"]})
    text, env = tenant_rules(
        tmp_path,
        {"redis_hash": "tenant-keys:openai", "fallback": "shared"},
        limits_backend={"redis": redis_server.url},
    )
    doc = yaml.safe_load(text)
    doc["providers"]["openai"]["credential"]["key"] = {"env": "OPENAI_API_KEY"}
    proxy = keyrelay_factory(yaml.safe_dump(doc), env=env)
    with HttpClient(proxy.port) as c:
        for who, expected in (
            ("alice", TENANT_KEYS["alice"]),
            ("carol", "test-openai-key-b82d03c5"),
        ):
            upstream.clear_requests()
            reply = c.post(CHAT, json={}, headers=[("authorization", f"Bearer {TOKENS[who]}")])
            assert reply.status == 200, reply.body
            assert sent_key(upstream.only_request()) == expected
    client.close()


# -- pools ------------------------------------------------------------------------------------

POOL_KEYS = {"POOL_KEY_A": "pool-key-a-5e6f7a", "POOL_KEY_B": "pool-key-b-0d1c2b"}


def pool_rules(**top: Any) -> str:
    return rules(
        openai=openai_credential(
            pool={"keys": [{"env": "POOL_KEY_A"}, {"env": "POOL_KEY_B"}], "cooldown": 30}
        ),
        top=top or None,
    )


def limit_key_a_once(retry_after: str) -> None:
    """Key A gets one 429 with retry-after; every other request is echoed."""
    limited = threading.Event()

    def handler(req: RecordedRequest, w: ResponseWriter) -> None:
        if sent_key(req) == POOL_KEYS["POOL_KEY_A"] and not limited.is_set():
            limited.set()
            w.send_json({"error": "rate limited"}, 429, [("retry-after", retry_after)])
        else:
            echo(req, w)

    return handler  # type: ignore[return-value]


def test_a_pool_key_answered_429_rests_for_retry_after_then_comes_back(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    upstream.set_default(limit_key_a_once("2"))
    proxy = keyrelay_factory(pool_rules(), env=POOL_KEYS)
    a, b = POOL_KEYS["POOL_KEY_A"], POOL_KEYS["POOL_KEY_B"]
    with HttpClient(proxy.port) as c:
        first = [c.post(CHAT, json={}).status for _ in range(2)]
        assert sorted(first) == [200, 429]  # round-robin: one request per key
        statuses = [c.post(CHAT, json={}).status for _ in range(6)]
        assert statuses == [200] * 6
        resting = [sent_key(r) for r in upstream.requests[2:]]
        assert resting == [b] * 6  # A rests: B carries the traffic
        proxy.wait_for_output(r"openai: key \w{8} answered 429: resting it for 2s")

        time.sleep(2.5)
        upstream.clear_requests()
        replies = [c.post(CHAT, json={}) for _ in range(4)]
        assert [r.status for r in replies] == [200] * 4
        # The upstream echoes the key it got: masked before the client (and any record) sees it.
        assert "<POOL_KEY_A>" in replies[0].text + replies[1].text
        assert all(a not in r.text and b not in r.text for r in replies)
        assert sorted(sent_key(r) or "" for r in upstream.requests) == sorted([a, a, b, b])
        # Metrics count requests per key by its id (a hash prefix), never by the key itself.
        text = c.get("/_keyrelay/metrics").body.decode()
    per_key = {
        (s.labels["key_id"], s.labels["status"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "keyrelay_key_requests"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert per_key == {(key_id(a), "200"): 2, (key_id(a), "429"): 1, (key_id(b), "200"): 9}
    assert a not in text and b not in text
    output = proxy.output()
    assert a not in output and b not in output


def test_pool_cool_downs_are_shared_through_redis(
    keyrelay_factory, upstream: UpstreamServer, redis_server: RedisServer
) -> None:
    upstream.set_default(limit_key_a_once("30"))
    text = pool_rules(limits_backend={"redis": redis_server.url})
    first = keyrelay_factory(text, env=POOL_KEYS)
    second = keyrelay_factory(text, env=POOL_KEYS)
    with HttpClient(first.port) as c:
        assert sorted(c.post(CHAT, json={}).status for _ in range(2)) == [200, 429]
    first.wait_for_output(r"answered 429: resting it for 30s")
    time.sleep(0.3)  # the rest is written to Redis in the background
    upstream.clear_requests()
    with HttpClient(second.port) as c:
        assert [c.post(CHAT, json={}).status for _ in range(4)] == [200] * 4
    assert {sent_key(r) for r in upstream.requests} == {POOL_KEYS["POOL_KEY_B"]}


def test_every_pool_key_resting_is_a_503_with_retry_after(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    refused = {"error": {"code": "invalid_api_key", "type": "invalid_request_error"}}
    upstream.set_default(lambda _req, w: w.send_json(refused, 401))
    proxy = keyrelay_factory(pool_rules(), env=POOL_KEYS)
    with HttpClient(proxy.port) as c:
        assert [c.post(CHAT, json={}).status for _ in range(2)] == [401, 401]
        reply = c.post(CHAT, json={})
    assert reply.status == 503
    assert reply.json()["type"].endswith("/keys-cooling-down")
    assert 25 <= int(reply.header("retry-after") or 0) <= 30
    assert len(upstream.requests) == 2


def test_a_client_cannot_rest_the_pool_keys_with_its_own_headers(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    """A foreign OpenAI-Organization got a 401 that rested each key for everybody: the header is
    dropped, and a 401 that is not about the key (or a bare 429) rests nothing."""

    def handler(req: RecordedRequest, w: ResponseWriter) -> None:
        if req.header("openai-organization") or req.header("x-test-refuse"):
            w.send_json({"error": {"code": "mismatched_organization"}}, 401)
        elif req.header("x-test-slow-down"):
            w.send_json({"error": "slow down"}, 429)
        else:
            echo(req, w)

    upstream.set_default(handler)
    proxy = keyrelay_factory(pool_rules(), env=POOL_KEYS)
    with HttpClient(proxy.port) as c:
        foreign = [("openai-organization", "org-bogus"), ("openai-project", "proj-bogus")]
        assert [c.post(CHAT, json={}, headers=foreign).status for _ in range(2)] == [200, 200]
        assert all(r.header("openai-organization") is None for r in upstream.requests)
        assert all(r.header("openai-project") is None for r in upstream.requests)
        for header, status in (("x-test-refuse", 401), ("x-test-slow-down", 429)):
            statuses = [c.post(CHAT, json={}, headers=[(header, "1")]).status for _ in range(2)]
            assert statuses == [status, status]  # both keys got one
        upstream.clear_requests()
        assert [c.post(CHAT, json={}).status for _ in range(4)] == [200] * 4
    assert sorted(sent_key(r) or "" for r in upstream.requests) == sorted(
        [POOL_KEYS["POOL_KEY_A"], POOL_KEYS["POOL_KEY_B"]] * 2
    )
    assert "resting it" not in proxy.output()


def test_a_jwt_claim_picks_the_tenant_key_and_only_that_claim_is_kept(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    table = tmp_path / "org-keys.yaml"
    table.write_text(yaml.safe_dump({"org-1": "org-one-key-5a5a", "org-2": "org-two-key-6b6b"}))
    text = rules(
        defaults={
            "auth": {
                "mode": "jwt",
                "jwt": {
                    "algorithms": ["HS256"],
                    "secret": {"env": "KR_JWT_SECRET"},
                    "audience": AUDIENCE,
                    "issuer": ISSUER,
                },
            }
        },
        openai=openai_credential(tenants={"file": str(table), "claim": "org"}),
    )
    proxy = keyrelay_factory(text, env={"KR_JWT_SECRET": HS_SECRET})
    with HttpClient(proxy.port) as c:
        for user, org in [("alice", "org-1"), ("bob", "org-2"), ("carol", "org-1")]:
            token = hs_token(user, org=org, email=f"{user}@example.com")
            reply = c.post(CHAT, json={}, headers=[("authorization", f"Bearer {token}")])
            assert reply.status == 200, reply.body
        no_org = c.post(CHAT, json={}, headers=[("authorization", f"Bearer {hs_token('dan')}")])
    assert no_org.status == 403
    assert [sent_key(r) for r in upstream.wait_for_requests(3)] == [
        "org-one-key-5a5a",
        "org-two-key-6b6b",
        "org-one-key-5a5a",
    ]


def test_a_key_rotated_in_env_while_a_stream_is_in_flight_stays_masked(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    """The env source is rebuilt at every reload: the old key must stay masked anyway, in the
    saved flow (`-w`) of a stream that started with it and ended after the rotation."""
    old, new = "env-key-before-rotation-41f0", "env-key-after-rotation-8c2d"
    rotated = threading.Event()

    def handler(req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_head(200, [("content-type", "text/event-stream")], chunked=True)
        w.write_chunk(f"data: got {sent_key(req)}\n\n".encode())
        rotated.wait(10)
        w.write_chunk(f"data: still {sent_key(req)}\n\n".encode())
        w.end()

    upstream.set_default(handler)
    proxy = keyrelay_factory(rules(), env={"OPENAI_API_KEY": None}, start=False)
    proxy.args += ["-w", str(proxy.workdir / "flows")]
    (proxy.workdir / ".env").write_text(f"OPENAI_API_KEY={old}\n")
    proxy.start()
    with HttpClient(proxy.port) as c, ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(c.post, CHAT, json={"stream": True})
        until(lambda: upstream.requests)
        mark = proxy.mark()
        time.sleep(1.1)  # a new mtime for the reload watcher
        (proxy.workdir / ".env").write_text(f"OPENAI_API_KEY={new}\n")
        proxy.wait_for_output(r"providers from", since=mark)
        rotated.set()
        reply = streaming.result(10)
    assert reply.status == 200
    assert old not in reply.text and "<OPENAI_API_KEY>" in reply.text
    with HttpClient(proxy.port) as c:
        assert c.post(CHAT, json={}).status == 200
    assert sent_key(upstream.requests[-1]) == new
    proxy.stop()
    saved = (proxy.workdir / "flows").read_bytes()
    assert b"chat/completions" in saved
    assert old.encode() not in saved and new.encode() not in saved
    assert old not in proxy.output() and new not in proxy.output()
