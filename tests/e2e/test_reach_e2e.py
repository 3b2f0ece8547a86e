"""The key reaches only what the app uses, through the real mitmdump: the default rules refuse
what no browser calls; with token auth, what one caller creates only they can read, delete,
list or chain from, however the path or id is written; a token removed from its file stops
working within 2 s. Nothing refused reaches the fake upstream."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.client import HttpClient
from support.guard import token_entry
from support.proxy import KeyrelayProcess
from support.repo import RULES as RULES_FILE
from support.upstream import UpstreamServer, json_response, sse_response

ALICE, BOB = "alice-token-5d2b", "bob-token-8e4c"
RESP = "resp_68af0c1d2e3f4a5b6c7d8e9f"
STREAMED = "resp_0123456789abcdefstream"


def with_tokens(tokens_file: Path) -> str:
    """The repo's rules.yaml with token auth from a file for every provider."""
    auth = f"defaults:\n  auth: {{mode: tokens, tokens: {{file: {tokens_file}}}}}\n"
    return RULES_FILE.read_text().replace("defaults:\n", auth, 1)


def alice_and_bob(keyrelay_factory, tmp_path: Path) -> tuple[KeyrelayProcess, Path]:
    """keyrelay with the repo's rules and two callers' tokens in a file."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{token_entry('alice', ALICE)}\n{token_entry('bob', BOB)}\n")
    return keyrelay_factory(with_tokens(tokens)), tokens


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]


def test_the_default_rules_refuse_what_no_browser_calls(keyrelay, client, upstream) -> None:
    for method, path in [
        ("GET", "/api/openai/files"),
        ("GET", "/api/openai/chat/completions?limit=100"),
        ("POST", "/api/openai/realtime/client_secrets"),
        ("GET", "/api/elevenlabs/v1/history"),
        ("GET", "/api/anthropic/v1/messages/batches"),
    ]:
        reply = client.request(method, path, b"{}" if method == "POST" else None)
        problem = reply.json()
        assert reply.status == 403, (path, reply.status)
        assert problem["type"].endswith("/operation-not-allowed")
        assert f"{method} api." in problem["detail"] and ".allow in rules.yaml" in problem["detail"]
    assert upstream.requests == []


def test_what_one_caller_creates_no_other_can_reach(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    proxy, _ = alice_and_bob(keyrelay_factory, tmp_path)
    upstream.route("POST", "/v1/responses", json_response({"id": RESP, "object": "response"}))
    upstream.route("GET", "/v1/responses/", json_response({"id": RESP, "object": "response"}))
    with HttpClient(proxy.port) as c:
        body = {"model": "gpt-4o-mini", "input": "hi"}
        created = c.post("/api/openai/responses", json.dumps(body), bearer(ALICE))
        assert created.status == 200 and created.json()["id"] == RESP
        assert c.get(f"/api/openai/responses/{RESP}", bearer(ALICE)).status == 200
        upstream.clear_requests()

        chained = {"model": "gpt-4o-mini", "input": "and?", "previous_response_id": RESP}
        escaped = json.dumps(chained).replace("resp_", "\\u0072esp_")
        for method, path, payload in [
            ("GET", f"/api/openai/responses/{RESP}", None),
            ("GET", f"/api/openai/responses/{RESP.upper()}", None),
            ("GET", f"/api/openai/responses/{RESP};v=1", None),
            ("GET", f"/api/openai/responses/{RESP}/input_items", None),
            ("GET", f"/api/openai/responses/{RESP.replace('_', '%5F')}", None),
            ("DELETE", f"/api/openai/responses/{RESP}", None),
            ("POST", f"/api/openai/responses/{RESP}/cancel", b"{}"),
            ("POST", "/api/openai/responses", json.dumps(chained).encode()),
            ("POST", "/api/openai/responses", escaped.encode()),
            ("POST", "/api/openai/chat/completions", json.dumps({"x": [RESP]}).encode()),
        ]:
            reply = c.request(method, path, payload, bearer(BOB))
            assert reply.status in (403, 404), (method, path, reply.status)
            if reply.status == 404:
                assert reply.json()["type"].endswith("/unknown-job"), (method, path)
        assert upstream.requests == []  # nothing bob sent reached the provider

        # A streamed creation: its id is found in the stream as it passes.
        events = [
            {"event": "response.created", "data": {"response": {"id": STREAMED}}},
            {"event": "response.completed", "data": {"response": {"id": STREAMED}}},
        ]
        upstream.route("POST", "/v1/responses", sse_response(events))
        streamed = c.post("/api/openai/responses", json.dumps(body), bearer(ALICE))
        assert streamed.status == 200 and STREAMED.encode() in streamed.body
        assert c.get(f"/api/openai/responses/{STREAMED}", bearer(BOB)).status == 404
        assert c.get(f"/api/openai/responses/{STREAMED}", bearer(ALICE)).status == 200


def test_a_token_removed_from_its_file_stops_working_within_two_seconds(
    keyrelay_factory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    proxy, tokens = alice_and_bob(keyrelay_factory, tmp_path)
    models = "/api/openai/models"
    with HttpClient(proxy.port) as c:
        assert c.get(models, bearer(BOB)).status == 200
        tokens.write_text(f"{token_entry('alice', ALICE)}\n")  # bob revoked
        removed = time.monotonic()
        while c.get(models, bearer(BOB)).status != 401:
            assert time.monotonic() - removed < 2.0, "bob's token still works after 2 s"
            time.sleep(0.1)
        assert c.get(models, bearer(ALICE)).status == 200
        tokens.write_text("# nobody\n")  # the last token removed: nobody gets in
        removed = time.monotonic()
        while c.get(models, bearer(ALICE)).status != 401:
            assert time.monotonic() - removed < 2.0, "alice's token still works after 2 s"
            time.sleep(0.1)
