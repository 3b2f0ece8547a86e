"""A brokered call's sideband events, in process (no sockets: the hangup recorded instead of
posted): what the books hold, and when keyrelay hangs the call up (addon/budget/sideband.py)."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons
from support.guard import rules

from addon.budget.calls import Call
from addon.budget.component import Budget
from addon.budget.sessions import Session
from addon.budget.sideband import Brokered, Reach, Sideband
from addon.config.rules import load
from addon.metering import realtime
from addon.resources import Resources
from addon.routing.router import Route, Router

pytestmark = pytest.mark.unit

CONTEXT = 1000
RATES = {"input": 32.0, "cache_read": 32.0, "output": 64.0}
AUDIO = {"audio_input": 32.0, "audio_cache_read": 32.0, "audio_output": 64.0}
# One response's worst case: its context and OpenAI's most output, at the dearest rates (USD).
WORST = (CONTEXT * 32 + realtime.MAX_OUTPUT * 64) / 1e6
NANO = 10**9


class Recorded(Sideband):
    """A sideband whose hangups are recorded, not posted."""

    hangups: list[str]

    async def hang_up(self, why: str) -> None:
        self.hangups.append(why)
        self.session.ended = True


def setup(tmp_path: Path, daily: float) -> tuple[Budget, Call]:
    operation = {"op": "POST api.openai.com/v1/realtime/calls", "kind": "call"}
    openai = {
        "operations": {"realtime.calls": {**operation, "meter": "session", "reserve": CONTEXT}},
        "prices": [
            {"model": "gpt-realtime-dear*", "input": 320.0, "output": 640.0},
            {"model": "gpt-realtime*", **RATES, **AUDIO},
        ],
        "validation": {"models": ["gpt-realtime*"]},
    }
    path = tmp_path / "rules.yaml"
    path.write_text(rules(top={"budget": {"daily": daily}}, openai=openai))
    loaded = load(path, {})
    budget = Budget()
    with Resources().reload() as live:
        install = budget.prepare(loaded, live)
    install()
    route = Router(loaded).route("POST", "/api/openai/realtime/calls", {}.get)
    assert isinstance(route, Route) and route.operation is not None
    call = Call(route.provider, "token:alice", "realtime/calls", route.host, route.operation)
    call.accounts = budget.accounts(call.identity, call.provider, datetime.now(UTC))
    return budget, call


async def opened(budget: Budget, call: Call) -> Recorded:
    session = await budget.sessions.begin(call, "offer", "gpt-realtime", True, realtime.MAX_OUTPUT)
    assert isinstance(session, Session)
    reach = Reach("api.openai.com", ("127.0.0.1", 443), ssl.create_default_context())  # unused
    brokered = Brokered("rtc_1", ("authorization", "Bearer k"), reach, "/v1", 300)
    sideband = Recorded(budget.sessions, call, session, brokered)
    sideband.hangups = []
    return sideband


async def send(sideband: Sideband, kind: str, **fields: Any) -> None:
    await sideband.event(json.dumps({"type": kind, "event_id": "e", **fields}).encode())


async def day(budget: Budget, call: Call) -> dict[str, int]:
    assert budget.books is not None
    return (await budget.books.read((call.accounts[0].key,)))[0]


def usage(text_in: int, text_out: int) -> dict[str, Any]:
    return {
        "input_tokens": text_in,
        "output_tokens": text_out,
        "input_token_details": {"text_tokens": text_in, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": text_out, "audio_tokens": 0},
    }


def run(scenario: Any) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


def test_responses_settle_at_their_usage_and_the_last_coverable_one_hangs_up(
    tmp_path: Path,
) -> None:
    budget, call = setup(tmp_path, daily=2.5 * WORST)

    async def scenario() -> None:
        sideband = await opened(budget, call)
        assert (await day(budget, call))["reserved"] == round(WORST * NANO)
        await send(sideband, "response.created", response={"id": "r1"})
        assert (await day(budget, call))["reserved"] == 2 * round(WORST * NANO)
        cost = (CONTEXT * 32 + 100 * 64) / 1e6
        done = {"id": "r1", "usage": usage(CONTEXT, 100)}
        await send(sideband, "response.done", response=done)
        books = await day(budget, call)
        assert books["spent"] == round(cost * NANO) and books["reserved"] == round(WORST * NANO)
        assert sideband.hangups == []
        # Settled responses leave room for one more worst case, then no longer.
        for n in range(2, 10):
            await send(sideband, "response.created", response={"id": f"r{n}"})
            done = {"id": f"r{n}", "usage": usage(CONTEXT, realtime.MAX_OUTPUT)}
            await send(sideband, "response.done", response=done)
            if sideband.hangups:
                break
        assert sideband.hangups == ["budget-exhausted"]
        books = await day(budget, call)
        assert books["reserved"] == 0
        assert books["spent"] <= 2.5 * WORST * NANO < books["spent"] + WORST * NANO

    run(scenario)


def test_a_response_that_starts_uncovered_is_charged_its_worst_case_and_hangs_up(
    tmp_path: Path,
) -> None:
    budget, call = setup(tmp_path, daily=1.5 * WORST)

    async def scenario() -> None:
        sideband = await opened(budget, call)
        await send(sideband, "response.created", response={"id": "r1"})  # takes the reserve
        assert sideband.hangups == []
        await send(sideband, "response.created", response={"id": "r2"})  # none left for it
        assert sideband.hangups == ["budget-exhausted"]
        charged, writes = budget.sessions.release(call, sideband.session)
        for write in writes:
            await write()
        assert charged == 2 * round(WORST * NANO)  # neither reported its usage
        books = await day(budget, call)
        assert books["spent"] == 2 * round(WORST * NANO) and books["reserved"] == 0

    run(scenario)


@pytest.mark.parametrize(
    ("session", "why"),
    [
        ({"model": "gpt-4o-realtime-preview"}, "model-not-allowed"),
        ({"model": "gpt-realtime-dear"}, "unpriced"),  # dearer than what was reserved
        ({"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}, "unpriced"),
    ],
)
def test_a_session_the_rules_refuse_hangs_the_call_up(
    tmp_path: Path, session: dict[str, Any], why: str
) -> None:
    budget, call = setup(tmp_path, daily=10.0)

    async def scenario() -> None:
        sideband = await opened(budget, call)
        await send(sideband, "session.updated", session={"type": "realtime", **session})
        assert sideband.hangups == [why]

    run(scenario)


def test_a_model_as_dear_as_the_reserved_one_is_taken(tmp_path: Path) -> None:
    budget, call = setup(tmp_path, daily=10.0)

    async def scenario() -> None:
        sideband = await opened(budget, call)
        dated = "gpt-realtime-2025-08-28"
        await send(sideband, "session.created", session={"type": "realtime", "model": dated})
        assert sideband.hangups == []
        assert sideband.session.model == dated == call.model

    run(scenario)
