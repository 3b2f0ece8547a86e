"""Nothing per flow is left once its hooks have run: a mix of traffic through KeyRelay's hooks, in
process, then every component's per-flow table (addon/flowlocal.py) must be empty, while the
test still holds the flows (so it is the hooks that emptied them, not the garbage collector),
and again once the flows are gone (no table's value keeps its flow alive).

The mix: forwarded, refused early (no route) and late (the body rules), aborted by the client
mid-stream, the upstream down, a WebSocket that opened and closed, a stream reset mid-way.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from mitmproxy import http, websocket
from mitmproxy.test import taddons, tflow
from support.guard import rules, token_entry

from addon import flowlocal
from addon.relay import KeyRelay

TOKEN = "drain-token-4f1c"
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
FAL = "https://queue.fal.run/fal-ai/flux/dev"


def rules_text() -> str:
    return rules(
        defaults={"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        openai={
            "limits": {"concurrent": 50},
            "validation": {"models": ["gpt-4o-mini"]},
            "prices": [{"model": "*", "input": 1.0, "output": 2.0}],
        },
        fal={  # under a budget: its submit's reservation is held for the job
            "allow": ["* queue.fal.run/**"],
            "prices": [{"endpoint": "fal-ai/flux/*", "unit": 0.025, "reserve": 4}],
            "budget": {"daily": 5.0},
        },
    )


def request(method: str, path: str, body: object = None, **headers: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, path
    flow.request.headers = http.Headers(authorization=f"Bearer {TOKEN}", **headers)
    flow.request.content = b"" if body is None else json.dumps(body).encode()
    if body is not None:
        flow.request.headers["content-type"] = "application/json"
    flow.response = None
    return flow


def answer(status: int, body: bytes, **headers: str) -> http.Response:
    return http.Response.make(status, body, {"content-type": "application/json", **headers})


Step = Callable[[KeyRelay], Awaitable[http.HTTPFlow]]


async def sent(relay: KeyRelay, flow: http.HTTPFlow) -> bool:
    """requestheaders and request, as mitmproxy runs them: whether it goes upstream."""
    await relay.requestheaders(flow)
    if flow.response is None:
        await relay.request(flow)
    return flow.response is None


async def forwarded(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("POST", "/api/openai/chat/completions", CHAT)
    assert await sent(relay, flow)
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    flow.response = answer(200, json.dumps({"model": "gpt-4o-mini", "usage": usage}).encode())
    relay.responseheaders(flow)
    await relay.response(flow)
    return flow


async def fal_job(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("POST", "/api/fal/proxy", {"prompt": "p"}, **{"x-fal-target-url": FAL})
    assert await sent(relay, flow)
    job = b'{"request_id": "00000000-0000-4000-8000-000000000001"}'
    flow.response = answer(200, job)
    relay.responseheaders(flow)
    await relay.response(flow)
    return flow


async def refused_early(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("GET", "/nowhere")
    assert not await sent(relay, flow)
    await relay.response(flow)
    return flow


async def refused_late(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("POST", "/api/openai/chat/completions", {**CHAT, "model": "o1-pro"})
    assert not await sent(relay, flow)  # the body rules, on the whole body
    await relay.response(flow)
    return flow


async def client_left_mid_stream(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("POST", "/api/openai/chat/completions", {**CHAT, "stream": True})
    assert await sent(relay, flow)
    flow.response = answer(200, b"", **{"content-type": "text/event-stream"})
    flow.response.stream = True
    relay.responseheaders(flow)
    assert callable(flow.response.stream)
    flow.response.stream(b'data: {"object":"chat.completion.chunk","choices":[]}\n\n')
    flow.error = tflow.terr("Client disconnected.")
    await relay.error(flow)
    return flow


async def upstream_down(relay: KeyRelay) -> http.HTTPFlow:
    flow = request("POST", "/api/openai/chat/completions", CHAT)
    assert await sent(relay, flow)
    flow.error = tflow.terr("Connection refused")
    await relay.error(flow)
    return flow


async def websocket_opened_and_closed(relay: KeyRelay) -> http.HTTPFlow:
    flow = request(
        "GET", "/api/openai/realtime?model=gpt-4o-mini", upgrade="websocket", connection="Upgrade"
    )
    assert await sent(relay, flow), flow.response and flow.response.content
    flow.response = http.Response.make(101, b"", {"upgrade": "websocket"})
    flow.websocket = websocket.WebSocketData()
    relay.responseheaders(flow)
    await relay.response(flow)  # on the 101: the socket holds its slot until it ends
    flow.websocket.timestamp_end = 1.0
    await relay.websocket_end(flow)
    return flow


STEPS: tuple[Step, ...] = (
    forwarded,
    fal_job,
    refused_early,
    refused_late,
    client_left_mid_stream,
    upstream_down,
    websocket_opened_and_closed,
)


@pytest.mark.parametrize("rounds", [3])
def test_nothing_per_flow_is_left(
    rounds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KR_TOKENS", token_entry("alice", TOKEN))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-drain-test")
    monkeypatch.setenv("FAL_KEY", "fal-drain-test")
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text())
    held: list[http.HTTPFlow] = []

    before = flowlocal.leftovers()  # what other tests' flows left (their hooks never all ran)

    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(path))
            for _ in range(rounds):
                for step in STEPS:
                    held.append(await step(relay))
            await asyncio.sleep(0.05)  # settlements and releases run in the background
            assert flowlocal.leftovers() == before, "hooks left per-flow state behind"

    asyncio.run(scenario())
    assert len(held) == rounds * len(STEPS)
    gone = weakref.ref(held[0])
    held.clear()
    gc.collect()
    assert gone() is None, "a per-flow value keeps its flow alive"
