"""Guard on flows: authentication, the concurrency slot and the body rules."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support.guard import rules, token_entry

from addon import flowstate
from addon.caller import Caller
from addon.config.model import ConfigError
from addon.config.rules import Rules, load
from addon.guard.component import Guard
from addon.problems import Refusal
from addon.resources import Resources
from addon.routing.router import Route, Router
from addon.transport.component import Transport

TOKEN = "client-token-alice-0001"
ENV = {"T": token_entry("alice", TOKEN)}
AUTH = f"Bearer {TOKEN}"
BODY = b'{"model": "gpt-4o-mini", "messages": []}'


def load_rules(tmp_path: Path, env: dict[str, str] = ENV, **sections: Any) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(
        rules(
            defaults={"auth": {"mode": "tokens", "tokens": {"env": "T"}}},
            openai={"limits": {"concurrent": 1}, "validation": {"models": ["gpt-4o*"]}},
            **sections,
        )
    )
    return load(path, env)


def prepared(rules: Rules) -> Guard:
    guard = Guard()
    with Resources().reload() as live:
        install = guard.prepare(rules, live)
    install()
    return guard


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


def request(
    rules: Rules, method: str = "GET", body: bytes | None = None, **headers: str
) -> tuple[http.HTTPFlow, Route]:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, "/api/openai/chat/completions"
    flow.request.headers.clear()
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    if body is not None:
        flow.request.content = body  # sets content-length
    route = Router(rules).route(method, flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route)
    flowstate.of(flow)["provider"] = route.provider.name
    return flow, route


def test_a_request_without_a_valid_token_is_refused_401(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        for flow, route in (request(rules), request(rules, authorization="Bearer not-the-token")):
            refusal = await guard.requestheaders(flow, route)
            assert isinstance(refusal, Refusal)
            assert (refusal.status, refusal.reason) == (401, "unauthenticated")
            assert dict(refusal.headers)["www-authenticate"].startswith("Bearer")
            assert "identity" not in flowstate.of(flow)

    run(scenario)


def test_a_valid_token_is_admitted_with_its_identity(
    tmp_path: Path,
) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        flow, route = request(rules, authorization=AUTH)
        assert await guard.requestheaders(flow, route) == Caller("token:alice")
        assert flowstate.of(flow)["identity"] == "token:alice"
        guard.response(flow)

    run(scenario)


def test_a_preflight_needs_no_credentials(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        flow, route = request(
            rules, origin="http://localhost:3000", access_control_request_method="POST"
        )
        flow.request.method = "OPTIONS"  # (were OPTIONS among the provider's methods)
        caller = await guard.requestheaders(flow, route)
        assert isinstance(caller, Caller) and caller.anonymous

    run(scenario)


def test_release_frees_the_concurrency_slot(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        first, route = request(rules, authorization=AUTH)
        assert isinstance(await guard.requestheaders(first, route), Caller)
        second, _ = request(rules, authorization=AUTH)
        refusal = await guard.requestheaders(second, route)
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.reason) == (429, "rate-limited")
        assert "retry-after" in dict(refusal.headers)
        guard.response(second)  # never admitted: frees nothing
        guard.response(first)
        await asyncio.sleep(0.001)  # the release runs in the background
        third, _ = request(rules, authorization=AUTH)
        assert isinstance(await guard.requestheaders(third, route), Caller)
        guard.response(third)

    run(scenario)


def test_an_open_websocket_keeps_its_slot_until_it_ends(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        socket = tflow.twebsocketflow()
        route = request(rules, authorization=AUTH)[1]
        # Under `models:` a WebSocket names its model in the URL (its messages are not checked).
        route = dataclasses.replace(route, path=route.path + "?model=gpt-4o-realtime")
        socket.request.headers["authorization"] = AUTH
        flowstate.of(socket)["provider"] = "openai"
        assert isinstance(await guard.requestheaders(socket, route), Caller)
        assert socket.websocket is not None
        socket.websocket.timestamp_end = None
        guard.response(socket)  # `response` on the 101
        await asyncio.sleep(0.001)
        assert isinstance(
            await guard.requestheaders(request(rules, authorization=AUTH)[0], route), Refusal
        )
        socket.websocket.timestamp_end = 1.0
        guard.response(socket)  # websocket_end
        await asyncio.sleep(0.001)
        assert isinstance(
            await guard.requestheaders(request(rules, authorization=AUTH)[0], route), Caller
        )

    run(scenario)


def test_a_checked_body_must_be_sized_and_is_checked_whole(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)

    async def scenario() -> None:
        unsized, route = request(rules, "POST", authorization=AUTH)
        refusal = await guard.requestheaders(unsized, route)
        assert isinstance(refusal, Refusal) and refusal.status == 411

        sized, route = request(
            rules, "POST", BODY, content_type="application/json", authorization=AUTH
        )
        sized.request.stream = True
        assert isinstance(await guard.requestheaders(sized, route), Caller)
        Transport().decide_body(sized)  # relay.py decides once every step has declared
        assert sized.request.stream is False  # kept whole for check_body
        assert guard.request(sized) is None
        sized.request.content = BODY.replace(b"gpt-4o-mini", b"o1-pro")
        refusal = guard.request(sized)
        assert isinstance(refusal, Refusal) and refusal.reason == "model-not-allowed"
        flowstate.refused(flowstate.of(sized), "rate-limited")
        assert guard.request(sized) is None  # already answered: not checked again
        guard.response(sized)

    run(scenario)


def test_a_failed_prepare_keeps_the_installed_gates(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    guard = prepared(rules)
    gates = guard.gates
    with pytest.raises(ConfigError, match="environment variable T"), Resources().reload() as live:
        guard.prepare(load_rules(tmp_path, env={}), live)
    assert guard.gates is gates


def test_open_providers_on_a_public_address_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules())
    guard = prepared(load(path, {}))
    with caplog.at_level(logging.WARNING):
        guard.warn_if_exposed("127.0.0.1")
        guard.warn_if_exposed("localhost")
        assert not caplog.records
        guard.warn_if_exposed("")
    assert "NO client authentication for openai, fal" in caplog.text


def test_anonymous_ipv6_clients_share_their_64s_limits(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules(openai={"limits": {"rate": "2/minute"}}))
    rules_ = load(path, {})
    guard = prepared(rules_)

    async def admitted(address: str) -> bool:
        flow, route = request(rules_)
        flow.client_conn.peername = (address, 40000, 0, 0)
        answer = await guard.requestheaders(flow, route)
        assert isinstance(answer, Caller) or answer.status == 429
        assert flowstate.of(flow)["identity"].startswith("ip:")
        return isinstance(answer, Caller)

    async def scenario() -> None:
        one_subscriber = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]
        assert [await admitted(a) for a in one_subscriber] == [True, True, False]
        assert await admitted("2001:db8:1:3::1")  # the next /64 is someone else

    run(scenario)
