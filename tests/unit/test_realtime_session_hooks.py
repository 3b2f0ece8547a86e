"""A metered session's hooks in process (addon/budget/sessions.py through the budget): the first
response reserved at open, each response's reservation taken before it starts and settled at its
usage, a long session's leases renewed, and a session cut mid-response charged its reservation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from support import session_hooks
from support.guard import rules
from support.session_hooks import handshake, held, run, send

from addon.budget import component as budget_component
from addon.budget.component import Budget
from addon.metering import prices
from addon.routing.router import Route

PRICE = {"model": "gpt-realtime*", "input": 1.0, "output": 10.0, "audio_input": 2.0}
CAP = 100
# One response's worst case: 128,000 input tokens (the profile's bound) at $2 per million, 100
# output at $10.
WORST = (128_000 * 2 + CAP * 10) * 1000


def setup(tmp_path: Path, daily: float) -> tuple[Budget, Route, http.HTTPFlow]:
    path = tmp_path / "rules.yaml"
    provider = {
        "prices": [PRICE],
        "allow": ["browser", "realtime.socket"],
        "validation": {"max_tokens": CAP},
    }
    path.write_text(rules(top={"budget": {"daily": daily}}, openai=provider))
    return handshake(path, {}, "/api/openai/realtime?model=gpt-realtime")


async def opened(budget: Budget, route: Route, flow: http.HTTPFlow) -> None:
    """Open, and OpenAI's session.created come back."""
    await session_hooks.opened(budget, route, flow)
    await send(budget, flow, _created(), client=False)


def _created() -> dict[str, Any]:
    return {"type": "session.created", "session": {"type": "realtime", "max_output_tokens": CAP}}


def usage(text_in: int, audio_out: int) -> dict[str, Any]:
    return {
        "input_tokens": text_in,
        "output_tokens": audio_out,
        "input_token_details": {"text_tokens": text_in, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 0, "audio_tokens": audio_out},
    }


def test_each_response_is_reserved_before_it_starts_and_settled_at_its_usage(
    tmp_path: Path,
) -> None:
    budget, route, flow = setup(tmp_path, daily=10.0)

    async def scenario() -> None:
        await opened(budget, route, flow)
        assert await held(budget) == (0, WORST)  # the first response's, from the open
        create = await send(budget, flow, {"type": "response.create"}, client=True)
        assert not create.dropped
        # Sent with the cap its reservation assumed, whatever the session's cap is by then.
        assert json.loads(create.content)["response"] == {"max_output_tokens": CAP}
        assert await held(budget) == (0, 2 * WORST)  # its own, and the next one's
        created = {"type": "response.created", "response": {"id": "resp_1"}}
        await send(budget, flow, created, client=False)
        done = {"type": "response.done", "response": {"id": "resp_1", "usage": usage(500, 40)}}
        await send(budget, flow, done, client=False)
        cost = (500 * 1.0 + 40 * 10.0) * 1000
        assert await held(budget) == (cost, WORST)
        await budget.websocket_end(flow)
        await asyncio.sleep(0.01)  # the settlements are spawned
        assert await held(budget) == (cost, 0)

    run(scenario)
    assert flow.metadata["keyrelay"]["cost"] == prices.usd(900_000)


def test_a_response_the_server_starts_takes_the_reserve(tmp_path: Path) -> None:
    """Voice activity: no response.create, the server's response.created is the start."""
    budget, route, flow = setup(tmp_path, daily=10.0)

    async def scenario() -> None:
        await opened(budget, route, flow)
        created = {"type": "response.created", "response": {"id": "resp_9"}}
        await send(budget, flow, created, client=False)
        assert await held(budget) == (0, 2 * WORST)
        await budget.websocket_end(flow)  # cut before its response.done
        await asyncio.sleep(0.01)
        assert await held(budget) == (WORST, 0)  # charged its reservation

    run(scenario)
    assert flow.metadata["keyrelay"]["charged"] == "reservation"


def test_a_response_create_asking_more_than_the_cap_is_sent_with_the_cap(tmp_path: Path) -> None:
    budget, route, flow = setup(tmp_path, daily=10.0)

    async def scenario() -> None:
        await opened(budget, route, flow)
        ask = {"type": "response.create", "response": {"max_output_tokens": "inf"}}
        create = await send(budget, flow, ask, client=True)
        assert json.loads(create.content)["response"]["max_output_tokens"] == CAP
        update = {"type": "session.update", "session": {"max_output_tokens": 4000}}
        sent = await send(budget, flow, update, client=True)
        assert json.loads(sent.content)["session"]["max_output_tokens"] == CAP
        await budget.websocket_end(flow)

    run(scenario)


def test_a_long_session_keeps_renewing_its_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget, route, flow = setup(tmp_path, daily=10.0)
    monkeypatch.setattr(budget_component, "RENEW_EVERY", 0.01)
    renewed: list[tuple[str, ...]] = []

    async def scenario() -> None:
        assert budget.books is not None
        real = budget.books.renew

        async def renew(accounts: Any, leases: tuple[str, ...]) -> None:
            renewed.append(leases)
            await real(accounts, leases)

        monkeypatch.setattr(budget.books, "renew", renew)
        await opened(budget, route, flow)
        await send(budget, flow, {"type": "response.create"}, client=True)
        await asyncio.sleep(0.05)
        await budget.websocket_end(flow)
        await asyncio.sleep(0.05)  # with nothing held, the renewals stop

    run(scenario)
    assert renewed and set(renewed[0]) == {f"{flow.id}#1", f"{flow.id}#2"}
    assert budget._renewing is None
