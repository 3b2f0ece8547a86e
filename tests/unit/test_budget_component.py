"""Budget on flows: what a cut stream, an unmetered stream and a buffered chat stream cost, and
the usage endpoint's caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support import metered
from support.guard import multipart_body, rules

from addon import flowstate
from addon.budget.component import Budget
from addon.caller import Caller
from addon.config.rules import Rules, load
from addon.resources import Resources
from addon.routing.router import Route, Router

FLAT = [{"model": "*", "input": 0.0, "output": 1000.0}]  # $0.001 per output token
ALICE = Caller("token:alice")
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 10,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def setup(
    tmp_path: Path, prices: list[dict[str, Any]] = FLAT, daily: float = 1.0
) -> tuple[Rules, Budget]:
    path = tmp_path / "rules.yaml"
    path.write_text(rules(top={"budget": {"daily": daily}}, openai={"prices": prices}))
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
        assert budget.requestheaders(flow, route, ALICE) is None and not flow.request.stream
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
        budget.requestheaders(flow, route, ALICE)
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
        budget.requestheaders(flow, route, ALICE)
        await budget.request(flow)
        flow.response = http.Response.make(
            429, b'{"error": "overloaded"}', {"content-type": "application/json"}
        )
        budget.responseheaders(flow)
        budget.response(flow)
        assert flowstate.of(flow)["cost"] == 0

    run(scenario)


def call(
    loaded: Rules, method: str, path: str, body: dict[str, Any] | None, **headers: str
) -> tuple[http.HTTPFlow, Route]:
    flow, _ = chat_flow(loaded, body or {})
    flow.request.method, flow.request.path = method, path
    if body is None:
        flow.request.content = b""
    flow.request.headers.update(headers)
    route = Router(loaded).route(method, path, flow.request.headers.get)
    assert isinstance(route, Route), route
    return flow, route


def refused(flow: http.HTTPFlow, route: Route, budget: Budget) -> tuple[int, str] | None:
    """What requestheaders, then request, answer: (status, problem type) or None."""
    result: list[Any] = []

    async def scenario() -> None:
        refusal = budget.requestheaders(flow, route, ALICE) or await budget.request(flow)
        result.append((refusal.status, refusal.reason) if refusal else None)

    run(scenario)
    return result[0]


def test_under_a_budget_what_cannot_be_priced_is_refused_and_the_free_is_free(
    tmp_path: Path,
) -> None:
    loaded, budget = setup(tmp_path)
    secret = {"session": {"type": "realtime", "model": "gpt-realtime"}}
    minted = call(loaded, "POST", "/api/openai/realtime/client_secrets", secret)
    assert refused(*minted, budget) == (403, "unpriced")  # a key that spends unmetered
    upgrade = {"upgrade": "websocket", "connection": "Upgrade"}
    socket = call(loaded, "GET", "/api/openai/models", None, **upgrade)  # nothing reads its usage
    assert refused(*socket, budget) == (403, "websocket-unmetered")
    # A Realtime session is metered (budget/sessions.py): it names its model, and its first
    # response's worst case (4096 output tokens at $1,000 per million) is more than $1 a day.
    session = call(loaded, "GET", "/api/openai/realtime", None, **upgrade)
    assert refused(*session, budget) == (403, "model-required")
    session = call(loaded, "GET", "/api/openai/realtime?model=gpt-realtime", None, **upgrade)
    assert refused(*session, budget) == (429, "budget-exhausted")
    assert refused(*call(loaded, "GET", "/api/openai/models", None), budget) is None  # free
    assert budget.books is not None


@pytest.mark.parametrize(
    "change",
    [
        {"max_tokens": -5},
        {"max_tokens": 10.5},
        {"max_tokens": "10"},
        {"max_tokens": True},
        {"max_completion_tokens": -1},
        {"n": 0},
        {"n": 2.0},
    ],
)
def test_counts_are_read_as_the_provider_reads_them(tmp_path: Path, change: dict) -> None:
    loaded, budget = setup(tmp_path)
    flow, route = chat_flow(loaded, {**CHAT, **change})
    assert refused(flow, route, budget) == (400, "invalid-count")


@pytest.mark.parametrize(
    "extra",
    [
        {"background": True},
        {"previous_response_id": "resp_0123456789"},
        {"conversation": "c"},
        {"tools": [{"type": "web_search_preview"}]},
        {"tools": [{"type": "function", "name": "f"}, {"type": "code_interpreter"}]},
        # Bounded, but FLAT names no price per search.
        {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]},
    ],
)
def test_what_bills_beyond_its_body_is_refused_under_a_budget(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    loaded, budget = setup(tmp_path)
    body = {"model": "gpt-4o", "input": "hi", "max_output_tokens": 5, **extra}
    assert refused(*call(loaded, "POST", "/api/openai/responses", body), budget) == (
        403,
        "unpriced",
    )
    plain = {"model": "gpt-4o", "input": "hi", "max_output_tokens": 5}
    assert refused(*call(loaded, "POST", "/api/openai/responses", plain), budget) is None


def test_a_request_that_could_never_fit_is_403_not_a_wait(tmp_path: Path) -> None:
    """$0.001 per output token, $1.00 a day: 2,000 tokens can never fit, 500 can."""
    loaded, budget = setup(tmp_path)
    flow, route = chat_flow(loaded, {**CHAT, "max_tokens": 2000})
    result: list[Any] = []

    async def scenario() -> None:
        budget.requestheaders(flow, route, ALICE)
        result.append(await budget.request(flow))

    run(scenario)
    refusal = result[0]
    assert refusal is not None and (refusal.status, refusal.reason) == (
        403,
        "request-exceeds-budget",
    )
    assert "retry-after" not in dict(refusal.headers)
    assert "lower max_tokens" in refusal.detail and "$1.0" in refusal.detail
    assert refused(*chat_flow(loaded, {**CHAT, "max_tokens": 500}), budget) is None


def test_an_escaped_stream_key_still_asks_for_the_usage(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path)
    flow, route = chat_flow(loaded, {})
    flow.request.content = json.dumps({**CHAT}).replace('"stream"', '"str\\u0065am"').encode()

    async def scenario() -> None:
        budget.requestheaders(flow, route, ALICE)
        assert await budget.request(flow) is None

    run(scenario)
    sent = json.loads(flow.request.content or b"")
    assert sent["stream_options"] == {"include_usage": True}


def test_an_answer_without_its_usage_is_charged_its_reservation(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, {**CHAT, "stream": False})
        budget.requestheaders(flow, route, ALICE)
        await budget.request(flow)
        flow.response = http.Response.make(200, b'{"choices": []}', {})
        budget.responseheaders(flow)
        budget.response(flow)
        state = flowstate.of(flow)
        assert state["charged"] == "reservation" and state["cost"] >= 0.01

    run(scenario)


def test_a_running_call_keeps_its_lease_and_a_finished_one_stops_the_renewals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease outlives a crash by LEASE_SECONDS only: a call that runs longer is renewed."""
    from addon.budget import component
    from addon.budget.books import LEASE_SECONDS, account_key, periods
    from addon.budget.memory import MemoryBooks

    monkeypatch.setattr(component, "RENEW_EVERY", 0.01)
    loaded, budget = setup(tmp_path)
    now = [1_000_000.0]
    budget.books = books = MemoryBooks(clock=lambda: now[0])

    async def reserved() -> int:
        keys = tuple(account_key("token:alice", p) for p in periods(component.datetime.now(UTC)))
        return (await books.read(keys))[0].get("reserved", 0)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, {**CHAT, "stream": False})
        assert (
            budget.requestheaders(flow, route, ALICE) is None and await budget.request(flow) is None
        )
        held = await reserved()
        assert held > 0
        for _ in range(3):  # three lease lengths: alive only because it was renewed
            now[0] += LEASE_SECONDS - 1
            await asyncio.sleep(0.05)
        assert await reserved() == held
        flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        budget.response(flow)
        await asyncio.sleep(0.05)
        assert await reserved() == 0 and budget._renewing is None

    run(scenario)


PER_UNIT = [
    {"model": "sora-2", "second": 0.1},
    {"model": "whisper-1", "second": 0.0001},
    {"model": "gpt-image-1", "image": 0.25},
]


def form(fields: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart body as the SDKs send one, and its content type."""
    parts = (
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value.decode("latin-1")}'
        for name, value in fields
    )
    boundary = "keyrelay-test"
    return multipart_body(*parts, boundary=boundary), f"multipart/form-data; boundary={boundary}"


def priced(
    budget: Budget, flow: http.HTTPFlow, route: Route, answer: dict[str, Any]
) -> tuple[float, float]:
    """(what was reserved, what was charged), in USD."""
    from addon.budget.books import account_key, periods
    from addon.metering.prices import usd

    seen: list[float] = []

    async def scenario() -> None:
        assert (
            budget.requestheaders(flow, route, ALICE) is None and await budget.request(flow) is None
        )
        assert budget.books is not None
        keys = tuple(account_key("token:alice", p) for p in periods(datetime.now(UTC)))
        seen.append(usd((await budget.books.read(keys))[0].get("reserved", 0)))
        headers = {"content-type": "application/json"}
        flow.response = http.Response.make(200, json.dumps(answer).encode(), headers)
        budget.responseheaders(flow)
        budget.response(flow)
        seen.append(flowstate.of(flow)["cost"])
        await asyncio.sleep(0)  # the settlement, before the next call reads the books

    run(scenario)
    return seen[0], seen[1]


def with_form(flow: http.HTTPFlow, fields: list[tuple[str, bytes]]) -> http.HTTPFlow:
    flow.request.content, flow.request.headers["content-type"] = form(fields)
    return flow


@pytest.mark.parametrize(
    ("body", "reserved", "answered", "charged"),
    [
        ({"seconds": "8"}, 0.8, "8", 0.8),
        ({"seconds": 4}, 0.4, "4", 0.4),
        ({}, 1.2, "4", 0.4),  # OpenAI makes 4 s by default; the longest (12) is reserved
    ],
)
def test_a_video_reserves_its_seconds_and_costs_what_its_job_says(
    tmp_path: Path, body: dict[str, Any], reserved: float, answered: str, charged: float
) -> None:
    loaded, budget = setup(tmp_path, PER_UNIT, daily=10.0)
    flow, route = call(loaded, "POST", "/api/openai/videos", {"model": "sora-2", **body})
    answer = {"object": "video", "id": "video_0123456789", "model": "sora-2", "seconds": answered}
    assert priced(budget, flow, route, answer) == (pytest.approx(reserved), pytest.approx(charged))


def test_forms_are_read_for_their_counts(tmp_path: Path) -> None:
    loaded, budget = setup(tmp_path, PER_UNIT, daily=10.0)
    image = b"\x89PNG" + b"\x00" * 5000

    def edit(*fields: tuple[str, bytes]) -> tuple[http.HTTPFlow, Route]:
        flow, route = call(loaded, "POST", "/api/openai/images/edits", {})
        return with_form(flow, [("model", b"gpt-image-1"), ("image", image), *fields]), route

    answer = {"created": 1, "data": [{"b64_json": "aGk="}, {"b64_json": "aGk="}]}
    assert priced(budget, *edit(("n", b"3")), answer) == (0.75, 0.5)
    assert refused(*edit(("n", b"2"), ("n", b"1")), budget) == (400, "invalid-count")
    assert refused(*edit(("n", b"-1")), budget) == (400, "invalid-count")

    video, route = call(loaded, "POST", "/api/openai/videos", {})
    video = with_form(video, [("model", b"sora-2"), ("prompt", b"a cat"), ("seconds", b"4")])
    done = {"object": "video", "id": "video_0123456789", "seconds": "4"}
    assert priced(budget, video, route, done) == (pytest.approx(0.4), pytest.approx(0.4))


def test_a_transcription_reserves_what_its_upload_can_hold_and_costs_its_seconds(
    tmp_path: Path,
) -> None:
    loaded, budget = setup(tmp_path, PER_UNIT, daily=10.0)
    flow, route = call(loaded, "POST", "/api/openai/audio/transcriptions", {})
    audio = b"OggS" + b"\x00" * 15_000  # at 6 kbit/s, the least a second takes: 20 s at most
    flow = with_form(flow, [("model", b"whisper-1"), ("file", audio)])
    answer = {"text": "hi", "usage": {"type": "duration", "seconds": 19.5}}
    reserved, charged = priced(budget, flow, route, answer)
    assert charged == pytest.approx(19.5 * 0.0001)
    assert 20 * 0.0001 <= reserved < 21 * 0.0001


@pytest.mark.parametrize("connected", [True, False])
def test_a_call_whose_client_left_costs_its_reservation_once_sent(
    tmp_path: Path, connected: bool
) -> None:
    """mitmproxy closes the upstream with the client: the answer naming the usage is never
    read, and the provider bills what it made. A request that never went out costs nothing."""
    loaded, budget = setup(tmp_path)

    async def scenario() -> None:
        flow, route = chat_flow(loaded, {**CHAT, "stream": False})
        flow.server_conn.tls = False
        flow.server_conn.timestamp_tcp_setup = 1.0 if connected else None
        budget.requestheaders(flow, route, ALICE)
        await budget.request(flow)
        budget.error(flow)
        state = flowstate.of(flow)
        assert state["cost"] == (pytest.approx(0.01) if connected else 0)
        assert state.get("charged") == ("reservation" if connected else None)

    run(scenario)


def test_a_request_naming_no_cap_is_sent_the_cap_its_reservation_assumed(tmp_path: Path) -> None:
    """OpenAI's own default (16,384 for gpt-4o) is above what keyrelay reserves when a body
    names no cap: the provider is told the reserved cap, so it cannot make more."""
    from addon.budget.books import account_key, periods
    from addon.metering.prices import usd

    loaded, budget = setup(tmp_path, daily=10.0)
    body = {k: v for k, v in CHAT.items() if k != "max_tokens"} | {"stream": False}

    async def scenario() -> None:
        flow, route = chat_flow(loaded, body)
        original = flow.request.content
        assert (
            budget.requestheaders(flow, route, ALICE) is None and await budget.request(flow) is None
        )
        assert budget.books is not None
        keys = tuple(account_key("token:alice", p) for p in periods(datetime.now(UTC)))
        reserved = usd((await budget.books.read(keys))[0]["reserved"])
        sent = json.loads(flow.request.content or b"")
        assert sent["max_completion_tokens"] * 0.001 == pytest.approx(reserved)  # FLAT prices
        flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        budget.response(flow)
        assert flow.request.content == original  # saved flows show what the client sent

    run(scenario)


def test_a_price_with_no_rate_for_the_operation_prices_nothing(tmp_path: Path) -> None:
    """`{model: "*", unit: 0.1}` matches a chat completion's model, and has no token rate: the
    call would be reserved and charged 0. It is unpriced instead."""
    loaded, budget = setup(tmp_path, [{"model": "*", "unit": 0.1}], daily=10.0)
    assert refused(*chat_flow(loaded, {**CHAT, "stream": False}), budget) == (403, "unpriced")
