"""A Gemini Live session's hooks in process (addon/budget/live_sessions.py through the budget):
nothing reserved before the setup, the first turn's worst case reserved at it and its cap
written in, a turn's reserve taken before the client's turn goes on, usage that comes after
`turnComplete` settling the finished turn, a turn the server starts taking the reserve, and a
session cut mid-turn charged that turn's reservation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from mitmproxy import http
from support.session_hooks import handshake, held, opened, run, send

from addon.budget.component import Budget
from addon.routing.router import Route

PRICE = {
    "model": "gemini-live*",
    "input": 1.0,
    "output": 4.0,
    "audio_input": 2.0,
    "audio_output": 10.0,
}
CAP = 100
CONTEXT = 1000  # the operation's reserve, in these rules
# One turn's worst case, in nano-dollars: 1,000 input tokens at $2 per million, 100 out at $10.
WORST = (CONTEXT * 2 + CAP * 10) * 1000
PATH = "/api/gemini/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def setup(tmp_path: Path) -> tuple[Budget, Route, http.HTTPFlow]:
    path = tmp_path / "rules.yaml"
    live = {
        "op": "GET generativelanguage.googleapis.com/ws/**",
        "kind": "stream",
        "meter": "session",
        "protocol": "gemini-live",
        "reserve": CONTEXT,
    }
    provider = {
        "profile": "gemini",
        "allow": ["live"],
        "operations": {"live": live},
        "prices": [PRICE],
        "validation": {"models": ["gemini-live*"], "max_tokens": CAP},
    }
    doc = {"budget": {"daily": 10.0}, "providers": {"gemini": provider}}
    path.write_text(yaml.safe_dump(doc))
    return handshake(path, {"GEMINI_API_KEY": "k"}, PATH)


def usage(text_in: int, audio_out: int) -> dict[str, Any]:
    return {
        "usageMetadata": {
            "promptTokenCount": text_in,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_in}],
            "responseTokenCount": audio_out,
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": audio_out}],
        }
    }


def cost(text_in: int, audio_out: int) -> int:
    return (text_in * 1 + audio_out * 10) * 1000


ASK = {
    "clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}
}
AUDIO = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "AAAA"}}]}}}
COMPLETE = {"serverContent": {"turnComplete": True}}


def test_turns_are_reserved_before_they_start_and_settled_at_their_usage(tmp_path: Path) -> None:
    budget, route, flow = setup(tmp_path)

    async def scenario() -> None:
        await opened(budget, route, flow)
        assert await held(budget) == (0, 0)  # the model, hence the price, comes with the setup
        config = {
            "model": "models/gemini-live-2.5-flash",
            "generationConfig": {"maxOutputTokens": 4000},
        }
        first = await send(budget, flow, {"setup": config}, client=True)
        assert not first.dropped
        assert json.loads(first.content)["setup"]["generationConfig"] == {"maxOutputTokens": CAP}
        assert await held(budget) == (0, WORST)
        await send(budget, flow, {"setupComplete": {}}, client=False)
        ask = await send(budget, flow, ASK, client=True)
        assert not ask.dropped
        assert await held(budget) == (0, 2 * WORST)  # its own, and the next turn's
        await send(budget, flow, AUDIO, client=False)
        # The usage comes in a message of its own, after turnComplete.
        await send(budget, flow, COMPLETE, client=False)
        assert await held(budget) == (0, 2 * WORST)
        await send(budget, flow, usage(300, 50), client=False)
        assert await held(budget) == (cost(300, 50), WORST)
        # Voice: the server starts a turn; it takes the reserve, and the next is reserved.
        await send(budget, flow, AUDIO, client=False)
        assert await held(budget) == (cost(300, 50), 2 * WORST)
        await send(budget, flow, {**COMPLETE, **usage(400, 60)}, client=False)
        assert await held(budget) == (cost(300, 50) + cost(400, 60), WORST)
        # The socket ends mid-turn: that turn is charged its whole reservation.
        await send(budget, flow, ASK, client=True)
        await send(budget, flow, AUDIO, client=False)
        await budget.websocket_end(flow)
        await asyncio.sleep(0.05)  # the settlements run as tasks
        assert await held(budget) == (cost(300, 50) + cost(400, 60) + WORST, 0)

    run(scenario)


def ended_with(budget: Budget) -> list[tuple[int, str]]:
    """The closes the session's glue asks for (code, reason), instead of making them."""
    closed: list[tuple[int, str]] = []

    def close(flow: Any, session: Any, message: bytes, code: int, reason: str) -> None:
        assert message == b'{"goAway": {"timeLeft": "0s"}}'
        session.ended = True
        closed.append((code, reason))

    budget.sessions.close = close  # type: ignore[method-assign]
    return closed


def test_a_message_before_the_setup_is_not_forwarded(tmp_path: Path) -> None:
    budget, route, flow = setup(tmp_path)

    async def scenario() -> None:
        await opened(budget, route, flow)
        closed = ended_with(budget)
        early = await send(budget, flow, ASK, client=True)
        assert early.dropped
        [(code, reason)] = closed
        assert code == 1008 and reason.startswith("invalid-message")
        assert await held(budget) == (0, 0)

    run(scenario)


def test_a_second_setup_is_not_forwarded(tmp_path: Path) -> None:
    budget, route, flow = setup(tmp_path)

    async def scenario() -> None:
        await opened(budget, route, flow)
        closed = ended_with(budget)
        config = {"model": "models/gemini-live-2.5-flash"}
        assert not (await send(budget, flow, {"setup": config}, client=True)).dropped
        other = {"model": "models/gemini-2.5-pro"}
        assert (await send(budget, flow, {"setup": other}, client=True)).dropped
        [(code, reason)] = closed
        assert code == 1008 and reason.startswith("invalid-message")
        assert (await send(budget, flow, ASK, client=True)).dropped  # the session has ended

    run(scenario)
