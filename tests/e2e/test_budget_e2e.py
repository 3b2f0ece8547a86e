"""Metering and budgets through the real mitmdump: usage from each provider's own answers
(buffered and streamed) in the access log, the flow and the metrics; budgets reserved and
settled, in memory and in a shared redis-server; /_keyrelay/usage."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import metered
from support.access_log import log_lines
from support.client import HttpClient, Reply
from support.guard import token_entry
from support.proxy import KeyrelayProcess
from support.redis_server import RedisServer
from support.upstream import UpstreamServer, json_response

from addon.budget import component as budget_component

ALICE, BOB, ADMIN = "alice-token-5d2e", "bob-token-8a1c", "admin-token-3f7b"
ENV = {
    "KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)]),
    "KR_ADMIN": ADMIN,
}
TOKEN_AUTH = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}
# Input costs nothing: a worst case is then max_tokens x output price, known exactly.
FLAT = [{"model": "*", "input": 0.0, "output": 1000.0}]  # $0.001 per output token


def provider(
    prefix: str, upstream: str, header: str, env: str, fmt: str = "{key}"
) -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "upstream": upstream,
        "credential": {"header": header, "format": fmt, "key": {"env": env}},
    }


def rules_text(
    *,
    budget: dict[str, float] | None = None,
    redis: str | None = None,
    on_error: str = "closed",
    anthropic_prices: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> str:
    providers: dict[str, Any] = {
        "anthropic": {
            **provider(
                "/api/anthropic", "https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY"
            ),
            "prices": anthropic_prices
            or [
                {"model": "claude-haiku-*", "input": 1.0, "output": 5.0},
                {
                    "model": "*",
                    "input": 3.0,
                    "output": 15.0,
                    "cache_read": 0.3,
                    "cache_write": 3.75,
                },
            ],
        },
        "openai": {
            **provider(
                "/api/openai",
                "https://api.openai.com/v1",
                "authorization",
                "OPENAI_API_KEY",
                "Bearer {key}",
            ),
            "prices": [{"model": "gpt-4o*", "input": 2.5, "output": 10.0}],
        },
        "elevenlabs": {
            **provider(
                "/api/elevenlabs", "https://api.elevenlabs.io", "xi-api-key", "ELEVENLABS_API_KEY"
            ),
            "prices": [{"model": "*", "characters": 300.0}],
        },
        "fal": {
            "match": {"header": "x-fal-target-url", "paths": ["/api/fal/proxy"]},
            "allow": ["* queue.fal.run/**"],
            "methods": ["GET", "POST"],
            "credential": {
                "header": "authorization",
                "format": "Key {key}",
                "key": {"env": "FAL_KEY"},
            },
            "ownership": False,
            "prices": [{"endpoint": "fal-ai/flux/*", "unit": 0.025, "reserve": 4}],
        },
        "inference": {
            "match": {"header": "x-inf-target-url", "paths": ["/api/inference/proxy"]},
            "allow": ["* api.inference.sh/**"],
            "credential": {
                "header": "authorization",
                "format": "Bearer {key}",
                "key": {"env": "INFERENCE_API_KEY"},
            },
            "ownership": False,
        },
    }
    doc: dict[str, Any] = {
        "defaults": {"auth": TOKEN_AUTH},
        "admin": {"loopback": False, "token": {"env": "KR_ADMIN"}},
        "providers": providers,
        **extra,
    }
    if budget:
        doc["budget"] = budget
    if redis:
        doc["limits_backend"] = {"redis": redis, "on_error": on_error}
    return yaml.safe_dump(doc, sort_keys=False)


def start(
    factory: Any, tmp_path: Path, text: str, name: str = "access.log"
) -> tuple[KeyrelayProcess, Path]:
    log = tmp_path / name
    proc = factory(
        text,
        env=ENV,
        extra_args=[
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
        ],
    )
    return proc, log


def auth(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def usage_of(port: int, token: str, query: str = "") -> Reply:
    return HttpClient(port).get("/_keyrelay/usage" + query, auth(token))


def usd(per_million: float, tokens: float) -> float:
    return round(tokens * per_million / 1e6, 9)


@pytest.fixture
def fakes(upstream: UpstreamServer) -> UpstreamServer:
    metered.install(upstream)
    return upstream


# -- metering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_usage_and_cost_from_its_answer(
    keyrelay_factory, fakes, tmp_path, stream
) -> None:
    proc, log = start(keyrelay_factory, tmp_path, rules_text())
    client = HttpClient(proc.port)
    for model, text, cap in (
        ("claude-haiku-4-5", "hello there", 40),
        ("claude-sonnet-4", "cached words", 90),
    ):
        body = {
            "model": model,
            "max_tokens": cap,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
        reply = client.post("/api/anthropic/v1/messages", json=body, headers=auth(ALICE))
        assert reply.status == 200, reply.body
    haiku, sonnet = log_lines(log, 2)
    assert haiku["usage"] == {
        "input_tokens": 11,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert haiku["cost"] == pytest.approx(usd(1.0, 11) + usd(5.0, 20))
    assert haiku["model"] == "claude-haiku-4-5"
    assert sonnet["usage"]["output_tokens"] == 45  # the last message_delta, not a sum
    assert sonnet["usage"]["cache_read_input_tokens"] == metered.CACHED
    assert sonnet["cost"] == pytest.approx(usd(3.0, 12) + usd(15.0, 45) + usd(0.3, metered.CACHED))


def test_openai_stream_untouched_for_the_client(keyrelay_factory, fakes, tmp_path) -> None:
    """keyrelay asks for the usage upstream and takes it out again: the client gets exactly
    what OpenAI sends a client that did not ask."""
    proc, log = start(keyrelay_factory, tmp_path, rules_text())
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 30,
        "stream": True,
        "messages": [{"role": "user", "content": "cached hi"}],
    }
    reply = HttpClient(proc.port).stream(
        "POST", "/api/openai/chat/completions", json=body, headers=auth(ALICE)
    )
    assert reply.status == 200
    assert reply.body == b"".join(metered.chat_events(body))
    sent = fakes.requests[-1].json()
    assert sent["stream_options"] == {"include_usage": True}
    (line,) = log_lines(log, 1)
    assert line["usage"] == {
        "input_tokens": 9,
        "output_tokens": 15,
        "cache_read_input_tokens": metered.CACHED,
    }
    assert line["cost"] == pytest.approx(usd(2.5, 9) + usd(10.0, 15) + usd(0.25, metered.CACHED))
    assert line["bytes_out"] == len(reply.body)
    assert line["bytes_in"] == len(json.dumps(body))  # what the client sent, as it sent it


def test_openai_client_that_asked_for_usage_gets_it(keyrelay_factory, fakes, tmp_path) -> None:
    proc, log = start(keyrelay_factory, tmp_path, rules_text())
    body = {
        "model": "gpt-4o",
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "abc"}],
    }
    reply = HttpClient(proc.port).stream(
        "POST", "/api/openai/chat/completions", json=body, headers=auth(ALICE)
    )
    assert reply.body == b"".join(metered.chat_events(body))
    assert log_lines(log, 1)[0]["usage"] == {"input_tokens": 3, "output_tokens": 4}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_buffered_chat_and_responses_api(keyrelay_factory, fakes, tmp_path, stream) -> None:
    proc, log = start(keyrelay_factory, tmp_path, rules_text())
    client = HttpClient(proc.port)
    responses = {
        "model": "gpt-4o",
        "max_output_tokens": 50,
        "stream": stream,
        "input": "cached input",
    }
    assert client.post("/api/openai/responses", json=responses, headers=auth(ALICE)).status == 200
    chat = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "four"}]}
    assert client.post("/api/openai/chat/completions", json=chat, headers=auth(ALICE)).status == 200
    first, second = log_lines(log, 2)
    assert first["usage"] == {
        "input_tokens": 12,
        "output_tokens": 25,
        "cache_read_input_tokens": metered.CACHED,
    }
    assert second["usage"] == {"input_tokens": 4, "output_tokens": 5}
    assert second["cost"] == pytest.approx(usd(2.5, 4) + usd(10.0, 5))


@pytest.mark.parametrize("path", ["/v1/text-to-speech/voice1", "/v1/text-to-speech/voice1/stream"])
def test_elevenlabs_characters(keyrelay_factory, fakes, tmp_path, path) -> None:
    proc, log = start(keyrelay_factory, tmp_path, rules_text())
    text = "Say this, and only this." * 3
    reply = HttpClient(proc.port).post(
        "/api/elevenlabs" + path, json={"text": text}, headers=auth(ALICE)
    )
    assert reply.status == 200 and reply.body.startswith(b"ID3")
    (line,) = log_lines(log, 1)
    assert line["usage"] == {"characters": len(text)}
    assert line["cost"] == pytest.approx(usd(300.0, len(text)))
    # No budget, but prices: the spend is kept and shown to its caller.
    mine = usage_of(proc.port, ALICE).json()
    assert mine["spent"] == pytest.approx(usd(300.0, len(text))) and mine["budget"] is None


def test_a_fal_submit_holds_its_reserve_until_its_result(keyrelay_factory, fakes, tmp_path) -> None:
    """fal bills a job when it runs, and says what it cost only with its result: each submit's
    reserve (4 units of $0.025) is held until then, so submits cannot outrun the budget."""
    proc, log = start(keyrelay_factory, tmp_path, rules_text(budget={"daily": 0.25}))
    client = HttpClient(proc.port)

    def fal(method: str, path: str, body: Any = None) -> Reply:
        headers = [("x-fal-target-url", "https://queue.fal.run" + path), *auth(ALICE)]
        return client.request(method, "/api/fal/proxy", json=body, headers=headers)

    def submit() -> Reply:
        return fal("POST", "/fal-ai/flux/dev", {"prompt": "p", "num_images": 1})

    first, second = submit(), submit()
    assert first.status == second.status == 200
    held = usage_of(proc.port, ALICE).json()
    assert held["reserved"] == pytest.approx(0.2) and held["spent"] == 0
    assert submit().status == 429  # 0.2 held + 0.1 > 0.25
    request_id = first.json()["request_id"]  # ...-000000000001: it billed 1 unit
    assert fal("GET", f"/fal-ai/flux/requests/{request_id}").status == 200
    lines = log_lines(log, 4)
    assert lines[0]["charged"] == "held" and lines[3]["usage"] == {"units": 1}
    assert lines[3]["cost"] == pytest.approx(0.025)
    settled = usage_of(proc.port, ALICE).json()
    assert settled["spent"] == pytest.approx(0.025) and settled["reserved"] == pytest.approx(0.1)
    assert submit().status == 200  # 0.025 + 0.1 + 0.1 fits


# -- budgets ------------------------------------------------------------------------------------


def chat(client: HttpClient, token: str, cap: int = 10, **extra: Any) -> Reply:
    body = {
        "model": "claude-x",
        "max_tokens": cap,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
    return client.post("/api/anthropic/v1/messages", json=body, headers=auth(token))


def slow_stream(max_tokens: int, *, gap: float) -> dict[str, Any]:
    """An Anthropic stream whose events the fake spaces `gap` seconds apart."""
    messages = [{"role": "user", "content": "hi"}]
    return {
        "model": "claude-x",
        "max_tokens": max_tokens,
        "stream": True,
        "metadata": {"gap": gap},
        "messages": messages,
    }


def test_budget_reserves_settles_and_refuses(keyrelay_factory, fakes, tmp_path) -> None:
    # Each request reserves 10 x $0.001 = $0.01 and costs 5 x $0.001 = $0.005.
    proc, _ = start(
        keyrelay_factory, tmp_path, rules_text(budget={"daily": 0.03}, anthropic_prices=FLAT)
    )
    client = HttpClient(proc.port)
    statuses = [chat(client, ALICE).status for _ in range(7)]
    # 0.005 spent each: after 5 requests 0.025 is spent and 0.005 left, less than a reservation.
    assert statuses == [200] * 5 + [429] * 2, statuses
    refused = chat(client, ALICE)
    assert refused.json()["type"].endswith("/budget-exhausted")
    wait = int(refused.header("retry-after") or 0)
    now = time.gmtime()
    assert abs(wait - (86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec))) <= 5
    assert len(fakes.requests) == 5
    assert chat(client, BOB).status == 200  # per identity
    unpriced = {"model": "o3", "messages": [{"role": "user", "content": "hi"}]}
    reply = client.post("/api/openai/chat/completions", json=unpriced, headers=auth(ALICE))
    # No price matches: under a budget it is refused, never free.
    assert reply.status == 403 and reply.json()["type"].endswith("/unpriced"), reply.body
    mine = usage_of(proc.port, ALICE).json()
    assert mine["identity"] == "token:alice"
    assert mine["spent"] == pytest.approx(0.025) and mine["reserved"] == 0
    assert mine["budget"] == 0.03 and mine["remaining"] == pytest.approx(0.005)
    assert mine["providers"]["anthropic"]["spent"] == pytest.approx(0.025)


def test_provider_budget(keyrelay_factory, fakes, tmp_path) -> None:
    text = rules_text(anthropic_prices=FLAT)
    doc = yaml.safe_load(text)
    doc["providers"]["anthropic"]["budget"] = {"daily": 0.02}
    proc, _ = start(keyrelay_factory, tmp_path, yaml.safe_dump(doc))
    client = HttpClient(proc.port)
    assert [chat(client, ALICE).status for _ in range(4)] == [200, 200, 200, 429]


def test_a_stopped_stream_costs_what_it_can_have_used_not_its_reservation(
    keyrelay_factory, fakes, tmp_path
) -> None:
    """The client stops an Anthropic stream after a few words; the fake bills, as Anthropic
    does, the input and every word it made. keyrelay charges at least that, at most the words
    it passed on as bytes plus its margin, and far less than the 300 tokens it reserved."""
    billed: list[dict[str, int]] = []
    words = metered.anthropic_words(billed, gap=0.3)
    fakes.route("POST", "/v1/messages", words, host="api.anthropic.com")
    proc, log = start(
        keyrelay_factory, tmp_path, rules_text(budget={"daily": 1.0}, anthropic_prices=FLAT)
    )
    body = slow_stream(300, gap=0.0)
    raw = json.dumps(body).encode()
    head = [
        "POST /api/anthropic/v1/messages HTTP/1.1",
        "Host: localhost",
        f"Authorization: Bearer {ALICE}",
        "Content-Type: application/json",
        f"Content-Length: {len(raw)}",
    ]
    with socket.create_connection(("127.0.0.1", proc.port)) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + raw)
        sock.settimeout(10)
        seen = b""
        while seen.count(b"text_delta") < 3:  # three words, then the client stops
            seen += sock.recv(4096)
    (line,) = log_lines(log, 1)
    (bill,) = _wait_for(lambda: billed)
    provider_cost = bill["output_tokens"] * 0.001  # FLAT: input is free, $0.001 per output token
    passed_on = seen.count(b"text_delta")
    assert line["cost"] >= provider_cost - 1e-9, (line, bill)
    ceiling = (len(b" word") * (bill["output_tokens"] + 1) + budget_component.CUT_MARGIN) * 0.001
    assert line["cost"] <= ceiling + 1e-9 and line["cost"] < 0.3, (line, bill, passed_on)
    assert line["charged"] == "estimate" and line["usage"]["input_tokens"] == 2
    assert usage_of(proc.port, ALICE).json()["spent"] == pytest.approx(line["cost"])


def _wait_for(found: Callable[[], list[Any]], timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (items := found()):
        assert time.monotonic() < deadline, "the fake never billed"
        time.sleep(0.05)
    return items


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    sock.settimeout(10)
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_usage_endpoint_authentication(keyrelay_factory, fakes, tmp_path) -> None:
    proc, _ = start(
        keyrelay_factory, tmp_path, rules_text(budget={"daily": 1.0}, anthropic_prices=FLAT)
    )
    client = HttpClient(proc.port)
    assert chat(client, BOB).status == 200
    anonymous = client.get("/_keyrelay/usage")
    assert anonymous.status == 401 and anonymous.json()["type"].endswith("/unauthenticated")
    assert client.get("/_keyrelay/usage", auth("wrong")).status == 401
    assert usage_of(proc.port, ALICE, "?identity=token:bob").status == 403  # not an admin
    bob = usage_of(proc.port, ADMIN, "?identity=token:bob").json()
    assert bob["identity"] == "token:bob" and bob["spent"] == pytest.approx(0.005)
    daily = bob["periods"]["daily"]
    assert daily["resets_at"].endswith("T00:00:00Z") and daily["budget"] == 1.0
    assert chat(client, ALICE, cap=20).status == 200
    assert usage_of(proc.port, BOB, "?top=5").status == 403  # only the admin lists identities
    top = usage_of(proc.port, ADMIN, "?top=5").json()
    assert top["period"] == "daily"
    assert [(i["identity"], i["spent"]) for i in top["identities"]] == [
        ("token:alice", pytest.approx(0.01)),
        ("token:bob", pytest.approx(0.005)),
    ]
    assert usage_of(proc.port, ADMIN, "?top=5&period=monthly").json()["identities"][1] == {
        "identity": "token:bob",
        "spent": pytest.approx(0.005),
    }
    assert usage_of(proc.port, ADMIN, "?top=0").status == 400


def test_memory_books_reset_on_restart(keyrelay_factory, fakes, tmp_path) -> None:
    text = rules_text(budget={"daily": 1.0}, anthropic_prices=FLAT)
    proc, _ = start(keyrelay_factory, tmp_path, text)
    assert chat(HttpClient(proc.port), ALICE).status == 200
    assert usage_of(proc.port, ALICE).json()["spent"] == pytest.approx(0.005)
    proc.stop()
    again, _ = start(keyrelay_factory, tmp_path, text, "again.log")
    assert usage_of(again.port, ALICE).json()["spent"] == 0  # documented: memory is per process


# -- budgets in Redis ---------------------------------------------------------------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_fifty_concurrent_over_two_instances_fit_exactly(
    keyrelay_factory, fakes, tmp_path, redis_server
) -> None:
    def slow(req: Any, w: Any) -> None:
        w.sleep(0.5)  # every reservation is held while the others ask
        metered.anthropic(req, w)

    fakes.route("POST", "/v1/messages", slow, host="api.anthropic.com")
    text = rules_text(budget={"daily": 0.07}, redis=redis_server.url, anthropic_prices=FLAT)
    a, _ = start(keyrelay_factory, tmp_path, text, "a.log")
    b, _ = start(keyrelay_factory, tmp_path, text, "b.log")
    ports = [a.port, b.port]
    barrier = threading.Barrier(50)

    def one(i: int) -> int:
        with HttpClient(ports[i % 2], keep_alive=False, timeout=30) as c:
            barrier.wait()
            return chat(c, ALICE).status

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses.count(200) == 7 and statuses.count(429) == 43, statuses  # 0.07 / 0.01
    assert len(fakes.requests) == 7
    # Settled to 0.005 each: 0.035 spent, nothing reserved.
    deadline = time.monotonic() + 10
    while usage_of(a.port, ALICE).json()["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    mine = usage_of(b.port, ALICE).json()
    assert mine["spent"] == pytest.approx(0.035) and mine["reserved"] == 0
    # One at a time, each settles before the next: 0.035 .. 0.06 spent, then 0.06 + 0.01 > 0.07.
    statuses = [chat(HttpClient(ports[i % 2]), ALICE).status for i in range(7)]
    assert statuses == [200] * 6 + [429], statuses


def test_redis_books_survive_a_restart_and_redis_down_fails_closed(
    keyrelay_factory, fakes, tmp_path, redis_server
) -> None:
    text = rules_text(budget={"daily": 1.0}, redis=redis_server.url, anthropic_prices=FLAT)
    proc, _ = start(keyrelay_factory, tmp_path, text)
    assert chat(HttpClient(proc.port), ALICE).status == 200
    proc.stop()
    proc, _ = start(keyrelay_factory, tmp_path, text, "again.log")
    assert usage_of(proc.port, ALICE).json()["spent"] == pytest.approx(0.005)  # kept
    redis_server.kill()
    down = chat(HttpClient(proc.port), ALICE)
    assert down.status == 503 and down.json()["type"].endswith("/budget-unavailable")
    assert len(fakes.requests) == 1
    proc.wait_for_output(r"budget: the store failed")
    assert proc.alive()


def test_redis_down_fails_open_when_told(keyrelay_factory, fakes, tmp_path, redis_server) -> None:
    text = rules_text(
        budget={"daily": 1.0}, redis=redis_server.url, on_error="open", anthropic_prices=FLAT
    )
    proc, _ = start(keyrelay_factory, tmp_path, text)
    redis_server.kill()
    assert chat(HttpClient(proc.port), ALICE).status == 200
    proc.wait_for_output(r"failing open")


def test_redis_restarted_mid_stream_settles_when_it_is_back(
    keyrelay_factory, fakes, tmp_path, redis_server
) -> None:
    """The settlement of a stream that ends while Redis is down is retried; a Redis that came
    back empty gets its cost, and its reservation released to 0, not below."""
    text = rules_text(budget={"daily": 1.0}, redis=redis_server.url, anthropic_prices=FLAT)
    proc, log = start(keyrelay_factory, tmp_path, text)
    body = slow_stream(100, gap=0.6)
    client = HttpClient(proc.port, timeout=30)
    done: list[Reply] = []
    streaming = threading.Thread(
        target=lambda: done.append(
            client.stream("POST", "/api/anthropic/v1/messages", json=body, headers=auth(ALICE))
        )
    )
    streaming.start()
    time.sleep(0.3)  # reserved, streaming
    redis_server.kill()
    streaming.join(10)
    assert done and done[0].status == 200 and b"message_stop" in done[0].body
    redis_server.start()  # empty: a new process on the same port
    deadline = time.monotonic() + 10
    mine: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = usage_of(proc.port, ALICE)
        if reply.status == 200 and (mine := reply.json())["spent"]:
            break
        time.sleep(0.2)
    assert mine["spent"] == pytest.approx(0.05) and mine["reserved"] == 0
    assert mine["remaining"] == pytest.approx(0.95)  # a negative reservation would show more
    assert log_lines(log, 1)[0]["cost"] == pytest.approx(0.05)


def test_a_browser_app_on_another_origin_reads_its_usage(keyrelay_factory, fakes, tmp_path) -> None:
    origin = "https://app.example.com"
    doc = yaml.safe_load(rules_text(budget={"daily": 1.0}, anthropic_prices=FLAT))
    doc["defaults"]["cors"] = {"origins": [origin]}
    proc, _ = start(keyrelay_factory, tmp_path, yaml.safe_dump(doc))
    client = HttpClient(proc.port)
    preflight = client.request(
        "OPTIONS",
        "/_keyrelay/usage",
        headers=[
            ("Origin", origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
    assert preflight.status in (200, 204), preflight.body
    assert preflight.header("access-control-allow-origin") == origin
    mine = client.get("/_keyrelay/usage", [("Origin", origin), *auth(ALICE)])
    assert mine.status == 200 and mine.json()["identity"] == "token:alice"
    assert mine.header("access-control-allow-origin") == origin


def test_inference_sh_runs_cannot_be_priced_so_a_budget_refuses_them(
    keyrelay_factory, fakes, tmp_path
) -> None:
    """inference.sh's task answers have no usage figures: under a budget a run is refused (it
    would be unbounded); without one it goes through, unmetered."""
    task = {"success": True, "data": {"id": "tsk_1", "status": 9, "output": {"text": "hi"}}}
    fakes.route("POST", "/apps/run", json_response(task), host="api.inference.sh")
    proc, log = start(keyrelay_factory, tmp_path, rules_text(budget={"daily": 1.0}))
    headers = [("x-inf-target-url", "https://api.inference.sh/apps/run"), *auth(ALICE)]
    reply = HttpClient(proc.port).post("/api/inference/proxy", json={"app": "x"}, headers=headers)
    assert reply.status == 403 and reply.json()["type"].endswith("/unpriced")
    assert "apps.run" in reply.json()["detail"] and fakes.requests == []
    proc, log = start(keyrelay_factory, tmp_path, rules_text(), name="open.log")
    reply = HttpClient(proc.port).post("/api/inference/proxy", json={"app": "x"}, headers=headers)
    assert reply.status == 200
    (line,) = log_lines(log, 1)
    assert line["provider"] == "inference" and "usage" not in line and "cost" not in line
