"""Gemini Live sessions metered through the real mitmdump. The client speaks the Live protocol at
the WebSocket level (the `websockets` library; messages as @google/genai's live module types
them), to send what the SDK's text turns do not (voice input, whose usage comes after
`turnComplete`); @google/genai's own Live client is driven in
tests/clients/test_gemini_live_client.py. The books move by what the fake billed from the usage
it reports, a budget that runs out ends the session within one turn (Gemini's `goAway`, close
4402), a setup naming a model the rules forbid ends it (1008) before anything reaches Gemini,
and the key never reaches the client."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import KeyrelayFactory
from support import session_books
from support.gemini_live_upstream import GeminiLiveUpstream, LiveRates
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.tls import TlsMaterial
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ALICE = "alice-live-token-5e0a"
KEY = TEST_KEYS["GEMINI_API_KEY"]
MODEL = "gemini-live-2.5-flash-preview"
CAP = 100  # the rules' max_tokens: every turn's output cap
CONTEXT = 128_000  # the profile's reserve: input tokens a turn may read
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
# Text and audio alike, so that a turn reading a long text costs near its worst case.
FLAT = LiveRates(text_in=32, audio_in=32, text_out=64, audio_out=64)


def rules(rates: LiveRates, *, daily: float, redis: str | None = None) -> str:
    provider = {
        "profile": "gemini",
        "allow": ["browser", "live"],
        "prices": [rates.prices("gemini-live*")],
        "validation": {"models": ["gemini-live*"], "max_tokens": CAP},
    }
    return session_books.rules("gemini", provider, daily=daily, redis=redis)


@pytest.fixture(params=["memory", "redis"])
def books(request: pytest.FixtureRequest) -> Iterator[str | None]:
    with session_books.kept_in(request.param) as url:
        yield url


@pytest.fixture
def gemini(test_ca: TlsMaterial) -> Iterator[GeminiLiveUpstream]:
    with GeminiLiveUpstream(test_ca, FLAT) as server:
        yield server


def start(
    factory: KeyrelayFactory, upstream: GeminiLiveUpstream, daily: float, redis: str | None = None
) -> KeyrelayProcess:
    return factory(
        rules(upstream.rates, daily=daily, redis=redis),
        env={"KR_TOKENS": token_entry("alice", ALICE)},
        upstream_port=upstream.port,
    )


def session(relay: KeyrelayProcess) -> ClientConnection:
    url = f"ws://127.0.0.1:{relay.port}/api/gemini{PATH}"
    return connect(url, additional_headers={"Authorization": f"Bearer {ALICE}"})


def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    ws.send(json.dumps(message))


def setup(ws: ClientConnection, model: str = MODEL) -> None:
    config = {"responseModalities": ["AUDIO"], "maxOutputTokens": 4000}
    send(ws, {"setup": {"model": f"models/{model}", "generationConfig": config}})


def say(ws: ClientConnection, text: str) -> None:
    turn = {"role": "user", "parts": [{"text": text}]}
    send(ws, {"clientContent": {"turns": [turn], "turnComplete": True}})


def until_usage(ws: ClientConnection) -> list[dict[str, Any]]:
    """Messages up to the turn's usage (with its turnComplete, or after it)."""
    seen = []
    while True:
        seen.append(json.loads(ws.recv(timeout=10)))
        if "usageMetadata" in seen[-1]:
            return seen


def spent(relay: KeyrelayProcess, until: float | None = None) -> dict[str, Any]:
    return session_books.spent(relay.port, ("Authorization", f"Bearer {ALICE}"), until)


def test_a_session_is_metered_by_what_the_fake_billed(
    keyrelay_factory: KeyrelayFactory, gemini: GeminiLiveUpstream
) -> None:
    relay = start(keyrelay_factory, gemini, daily=50.0)
    received: list[dict[str, Any]] = []
    with session(relay) as ws:
        setup(ws)
        assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
        say(ws, "What is the capital of France?")
        received += until_usage(ws)
        # Voice: audio streamed, then its end; the server starts the turn itself and reports
        # its usage after turnComplete.
        audio = base64.b64encode(b"\x01" * 3000).decode()
        send(ws, {"realtimeInput": {"audio": {"data": audio, "mimeType": "audio/pcm;rate=16000"}}})
        send(ws, {"realtimeInput": {"audioStreamEnd": True}})
        received += until_usage(ws)
        say(ws, "And of Italy?")
        received += until_usage(ws)
    assert len(gemini.bills) == 3
    books = spent(relay, until=gemini.billed)
    assert books["spent"] == pytest.approx(gemini.billed, abs=1e-8)
    assert books["reserved"] == 0
    # The setup reached Gemini with the rules' cap in place of its own.
    [first, *_] = gemini.received
    assert first["setup"]["generationConfig"]["maxOutputTokens"] == CAP
    [(target, headers)] = gemini.handshakes
    assert target == PATH
    assert headers["x-goog-api-key"] == KEY
    assert ALICE not in json.dumps(headers)
    assert KEY not in json.dumps(received)
    assert KEY not in relay.output()


def test_a_budget_that_runs_out_ends_the_session_within_one_turn(
    keyrelay_factory: KeyrelayFactory, gemini: GeminiLiveUpstream, books: str | None
) -> None:
    worst = (CONTEXT * 32 + CAP * 64) / 1e6  # a turn: its whole context read, its cap made
    text = "x" * 100_000  # each turn reads it all: it costs near its worst case
    first = (100_000 * 32 + CAP * 64) / 1e6
    # Room for the session's reserve and the first turn's next (2 worst cases), not for the
    # second turn's next once the first is spent, nor a third turn after two.
    daily = 9.0
    assert 2 * worst <= daily < min(first + 2 * worst, 2 * first + worst)
    relay = start(keyrelay_factory, gemini, daily=daily, redis=books)
    with session(relay) as ws:
        setup(ws)
        assert json.loads(ws.recv(timeout=10)) == {"setupComplete": {}}
        say(ws, text)
        until_usage(ws)
        say(ws, "again")
        until_usage(ws)
        # No third turn can be covered: keyrelay ends the session, as soon as the second has
        # settled (the close may come before this message is sent) or at this message.
        with contextlib.suppress(ConnectionClosed):
            say(ws, "and a third time")
        told = []
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                told.append(json.loads(ws.recv(timeout=10)))
    assert told == [{"goAway": {"timeLeft": "0s"}}]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4402
    assert closed.value.rcvd.reason.startswith("budget-exhausted")
    assert session_books.closes(gemini) == [4402]
    assert len(gemini.bills) == 2  # nothing was made past the budget
    asked = [m for m in gemini.received if "clientContent" in m]
    assert len(asked) == 2
    day = spent(relay, until=gemini.billed)
    assert day["spent"] == pytest.approx(gemini.billed, abs=1e-8)
    assert day["spent"] <= daily and day["reserved"] == 0


@pytest.mark.parametrize(
    ("model", "daily", "code", "reason"),
    [
        ("gemini-2.5-pro", 50.0, 1008, "model-not-allowed"),
        ("gemini-live-2.5-flash-preview", 1.0, 4402, "budget-exhausted"),  # below a turn's worst
    ],
)
def test_a_setup_the_rules_or_the_budget_refuse_ends_the_session_before_gemini_sees_it(
    keyrelay_factory: KeyrelayFactory,
    gemini: GeminiLiveUpstream,
    model: str,
    daily: float,
    code: int,
    reason: str,
) -> None:
    relay = start(keyrelay_factory, gemini, daily=daily)
    with session(relay) as ws:
        setup(ws, model)
        assert json.loads(ws.recv(timeout=10)) == {"goAway": {"timeLeft": "0s"}}
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    assert closed.value.rcvd.reason.startswith(reason)
    assert session_books.closes(gemini) == [code]
    assert gemini.received == []
    assert gemini.bills == []
    assert spent(relay)["spent"] == 0
