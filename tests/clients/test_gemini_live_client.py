"""@google/genai's Live client, unmodified, in Node (driver: gemini_live.mjs), through keyrelay to
the fake Gemini Live server (tests/support/gemini_live_upstream.py), under a budget: the books
move by what the fake billed from the usage it reports, a budget that runs out ends the session
within one turn (goAway, close 4402), and neither the client's key nor keyrelay's token reaches
Gemini."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from support import session_books
from support.gemini_live_upstream import GeminiLiveUpstream, LiveRates
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.tls import TlsMaterial

from clients.drivers import run_driver

ALICE = "alice-live-node-token-77c1"
CLIENT_KEY = "AIzaSy-client-side-dummy-0043"  # what the app gives the SDK; never sent upstream
MODEL = "gemini-live-2.5-flash-preview"
CAP = 100
CONTEXT = 128_000  # the profile's reserve
FLAT = LiveRates(text_in=32, audio_in=32, text_out=64, audio_out=64)


@pytest.fixture
def gemini(test_ca: TlsMaterial) -> Iterator[GeminiLiveUpstream]:
    with GeminiLiveUpstream(test_ca, FLAT) as server:
        yield server


def start(factory: Any, upstream: GeminiLiveUpstream, daily: float) -> KeyrelayProcess:
    provider = {
        "profile": "gemini",
        "allow": ["browser", "live"],
        "prices": [FLAT.prices("gemini-live*")],
        "validation": {"models": ["gemini-live*"], "max_tokens": CAP},
    }
    return factory(
        session_books.rules("gemini", provider, daily=daily, redis=None),
        env={"KR_TOKENS": token_entry("alice", ALICE)},
        upstream_port=upstream.port,
    )


def drive(relay: KeyrelayProcess, node: str, turns: list[str]) -> dict[str, Any]:
    env = {
        "PROXY_URL": f"{relay.url}/api/gemini",
        "GEMINI_CLIENT_CREDENTIAL": CLIENT_KEY,
        "GEMINI_MODEL": MODEL,
        "KEYRELAY_TOKEN": ALICE,
        "LIVE_TURNS": json.dumps(turns),
    }
    result = run_driver(node, "gemini_live.mjs", [], env)
    assert result["exit"] == 0 and result["ok"], result
    return result


def test_a_live_session_is_metered_by_what_the_fake_billed(
    node: str, keyrelay_factory: Any, gemini: GeminiLiveUpstream
) -> None:
    relay = start(keyrelay_factory, gemini, daily=50.0)
    result = drive(relay, node, ["What is the capital of France?", "And of Italy?"])
    assert len(result["usage"]) == len(gemini.bills) == 2
    # The client closed it (`session.close()` sends no code: 1005), not keyrelay.
    assert result["close"]["code"] == 1005 and not result["go_away"]
    books = session_books.spent(relay.port, ("Authorization", f"Bearer {ALICE}"), gemini.billed)
    assert books["spent"] == pytest.approx(gemini.billed, abs=1e-8)
    assert books["reserved"] == 0
    setup = gemini.received[0]["setup"]
    assert setup["model"] == f"models/{MODEL}"
    assert setup["generationConfig"]["maxOutputTokens"] == CAP  # the SDK asked 4000
    [(target, headers)] = gemini.handshakes
    assert target.startswith("/ws/google.ai.generativelanguage.")
    assert CLIENT_KEY not in target and ALICE not in json.dumps(headers)
    assert headers["x-goog-api-key"] == TEST_KEYS["GEMINI_API_KEY"]
    assert TEST_KEYS["GEMINI_API_KEY"] not in json.dumps(result)


def test_a_budget_that_runs_out_ends_the_live_session_within_one_turn(
    node: str, keyrelay_factory: Any, gemini: GeminiLiveUpstream
) -> None:
    worst = (CONTEXT * 32 + CAP * 64) / 1e6
    first = (100_000 * 32 + CAP * 64) / 1e6
    daily = 9.0  # the reserve and one turn's next; not the second's next, nor a third turn
    assert 2 * worst <= daily < min(first + 2 * worst, 2 * first + worst)
    relay = start(keyrelay_factory, gemini, daily=daily)
    result = drive(relay, node, ["x" * 100_000, "again", "a third time", "a fourth"])
    assert len(result["usage"]) == len(gemini.bills) == 2
    assert result["go_away"]
    assert result["close"]["code"] == 4402
    assert result["close"]["reason"].startswith("budget-exhausted")
    assert session_books.closes(gemini) == [4402]
    day = session_books.spent(relay.port, ("Authorization", f"Bearer {ALICE}"), gemini.billed)
    assert day["spent"] == pytest.approx(gemini.billed, abs=1e-8)
    assert day["spent"] <= daily and day["reserved"] == 0
