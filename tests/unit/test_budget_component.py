"""Budget on flows: what a cut stream, an unmetered stream and a buffered chat stream cost, and
the usage endpoint's caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support import metered
from support.guard import rules

from addon import flowstate
from addon.budget.component import Budget
from addon.config.rules import Rules, load
from addon.resources import Resources
from addon.routing.router import Route, Router

FLAT = [{"model": "*", "input": 0.0, "output": 1000.0}]  # $0.001 per output token
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 10,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def setup(tmp_path: Path) -> tuple[Rules, Budget]:
    path = tmp_path / "rules.yaml"
    path.write_text(rules(top={"budget": {"daily": 1.0}}, openai={"prices": FLAT}))
    loaded = load(path, {})
    budget = Budget()
    with Resources().reload() as live:
        install = budget.prepare(loaded, live)
    install()
    return loaded, budget


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


def chat_flow(loaded: Rules, body: dict[str, Any]) -> tuple[http.HTTPFlow, Route]:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/api/openai/chat/completions"
    flow.request.headers.clear()
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(body).encode()
    route = Router(loaded).route("POST", flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route)
    flowstate.of(flow).update(provider="openai", identity="token:alice")
    flow.response = None
    return flow, route


def sse(status: int, body: bytes) -> http.Response:
    return http.Response.make(status, body, {"content-type": "text/event-stream"})


def test_a_buffered_chat_stream_is_stripped_and_metered(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, CHAT)
        assert budget.requestheaders(flow, route) is None and not flow.request.stream
        assert await budget.request(flow) is None
        sent = json.loads(flow.request.content or b"")
        flow.response = sse(200, b"".join(metered.chat_events(sent)))
        budget.responseheaders(flow)  # not streamed: read whole in `response`
        budget.response(flow)
        assert flow.response.content == b"".join(metered.chat_events(CHAT))
        assert json.loads(flow.request.content or b"") == CHAT  # the client's body, for Save
        state = flowstate.of(flow)
        assert state["usage"] == {"input_tokens": 2, "output_tokens": 5}
        assert state["cost"] == 0.005

    run(scenario)


def test_a_stream_cut_before_its_usage_costs_its_reservation(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, {**CHAT, "stream_options": {"include_usage": True}})
        budget.requestheaders(flow, route)
        await budget.request(flow)
        flow.response = sse(200, b"")
        flow.response.stream = True
        budget.responseheaders(flow)
        assert callable(flow.response.stream)
        flow.response.stream(b'data: {"object":"chat.completion.chunk","choices":[]}\n\n')
        budget.error(flow)  # the client went away
        assert flowstate.of(flow)["cost"] >= 0.01  # 10 output tokens reserved, at least

    run(scenario)


def test_an_upstream_error_costs_what_was_metered(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, CHAT)
        budget.requestheaders(flow, route)
        await budget.request(flow)
        flow.response = http.Response.make(
            429, b'{"error": "overloaded"}', {"content-type": "application/json"}
        )
        budget.responseheaders(flow)
        budget.response(flow)
        assert flowstate.of(flow)["cost"] == 0

    run(scenario)
