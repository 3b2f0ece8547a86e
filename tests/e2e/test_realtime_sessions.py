"""OpenAI Realtime sessions metered through the real mitmdump, driven by the `openai` SDK's
realtime WebSocket client with keyrelay's token: the books move by what the fake billed, a budget
that runs out ends the session within one response (the error event, close 4402), a
`session.update` naming a forbidden model ends it (1008), and the key never reaches the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import KeyrelayFactory
from openai import OpenAI
from support import session_books
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.realtime_upstream import Rates, RealtimeUpstream, metered_socket
from support.redis_server import RedisServer
from support.tls import TlsMaterial
from websockets.exceptions import ConnectionClosed, InvalidStatus

ALICE = "alice-realtime-token-4b7e"
KEY = TEST_KEYS["OPENAI_API_KEY"]
MODEL = "gpt-realtime"
CAP = 100  # the rules' max_tokens: every response's output cap
# Input tokens one response may be billed: gpt-realtime's context window, set in the rules (the
# profile's default is the largest of OpenAI's realtime models).
CONTEXT = 32000
# No cache discount, so that a response costs near its worst case and a budget runs out fast.
FLAT = Rates(text_in=32, text_cached=32, audio_in=32, audio_cached=32, text_out=64, audio_out=64)


def rules(rates: Rates, *, daily: float, redis: str | None = None) -> str:
    provider = {
        "match": {"prefix": "/api/openai"},
        "upstream": "https://api.openai.com/v1",
        "credential": {
            "header": "authorization",
            "format": "Bearer {key}",
            "key": {"env": "OPENAI_API_KEY"},
        },
        "allow": ["browser", "realtime.socket"],
        "operations": {"realtime.socket": metered_socket(CONTEXT)},
        "prices": [rates.prices("gpt-realtime*")],
        "validation": {"models": ["gpt-realtime*"], "max_tokens": CAP},
    }
    doc = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        "budget": {"daily": daily},
        "providers": {"openai": provider},
    }
    if redis:
        doc["limits_backend"] = {"redis": redis}
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(params=["memory", "redis"])
def books(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Where the books are kept: keyrelay's memory, or a shared redis-server."""
    if request.param == "memory":
        yield None
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def realtime(test_ca: TlsMaterial) -> Iterator[RealtimeUpstream]:
    with RealtimeUpstream(test_ca, FLAT) as server:
        yield server


def start(
    factory: KeyrelayFactory, upstream: RealtimeUpstream, daily: float, redis: str | None = None
) -> KeyrelayProcess:
    return factory(
        rules(upstream.rates, daily=daily, redis=redis),
        env={"KR_TOKENS": token_entry("alice", ALICE)},
        upstream_port=upstream.port,
    )


def client(relay: KeyrelayProcess) -> OpenAI:
    return OpenAI(api_key=ALICE, base_url=f"http://127.0.0.1:{relay.port}/api/openai")


def spent(relay: KeyrelayProcess, until: float | None = None) -> dict[str, Any]:
    """The caller's day in the books, once settled (settlements land just after a close)."""
    return session_books.spent(relay.port, ("Authorization", f"Bearer {ALICE}"), until)


closes = session_books.closes


def until_done(events: Iterator[Any]) -> list[Any]:
    """Events up to and including the next `response.done` (or an error)."""
    seen = []
    for event in events:
        seen.append(event)
        if event.type in ("response.done", "error"):
            return seen
    raise AssertionError(f"the session ended first: {[e.type for e in seen]}")


def say(connection: Any, text: str) -> None:
    connection.conversation.item.create(
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
    )


def test_a_session_is_metered_by_what_the_fake_billed(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime, daily=50.0)
    received: list[str] = []
    with client(relay).realtime.connect(model=MODEL) as connection:
        connection.session.update(
            session={
                "type": "realtime",
                "model": "gpt-realtime-2025-08-28",
                "max_output_tokens": 4000,
            }
        )
        events = iter(connection)
        say(connection, "What is the capital of France?")
        connection.response.create()
        received += [e.model_dump_json() for e in until_done(events)]
        # Voice: audio appended and committed; the server starts the response itself.
        connection.input_audio_buffer.append(audio="QUJD" * 300)
        connection.input_audio_buffer.commit()
        received += [e.model_dump_json() for e in until_done(events)]
        connection.response.create(response={"max_output_tokens": "inf"})
        received += [e.model_dump_json() for e in until_done(events)]
    assert len(realtime.bills) == 3
    books = spent(relay, until=realtime.billed)
    assert books["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert books["reserved"] == 0
    # Every response ran under the rules' cap: the session's and the response's own lowered.
    caps = [
        e.get("session", e.get("response", {})).get("max_output_tokens")
        for e in realtime.received
        if e["type"] in ("session.update", "response.create")
    ]
    assert set(caps) - {None} == {CAP}, caps
    [(target, headers)] = realtime.handshakes
    assert target == f"/v1/realtime?model={MODEL}"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert ALICE not in json.dumps(headers)
    assert not [r for r in received if KEY in r]
    assert KEY not in relay.output()


def test_a_budget_that_runs_out_ends_the_session_within_one_response(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream, books: str | None
) -> None:
    # A response's worst case: its whole context and its cap, at the dearest rates.
    worst = (CONTEXT * 32 + CAP * 64) / 1e6
    text = "x" * 30000  # a response reads it all: each costs near its worst case
    first = (30000 * 32 + CAP * 64) / 1e6
    # Room for the first response and the one after it, not a third.
    daily = 2.5
    assert 2 * worst < daily < first + 2 * worst
    relay = start(keyrelay_factory, realtime, daily=daily, redis=books)
    with client(relay).realtime.connect(model=MODEL) as connection:
        events = iter(connection)
        say(connection, text)
        connection.response.create()
        assert until_done(events)[-1].type == "response.done"
        connection.response.create()
        assert until_done(events)[-1].type == "response.done"
        # No third response can be covered: keyrelay says so and closes.
        error = next(e for e in events if e.type in ("error", "response.created"))
        assert error.type == "error"
        assert error.error.code == "budget-exhausted"
        with pytest.raises(ConnectionClosed) as closed:
            connection.response.create()
            for _ in range(10):
                connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4402
    assert closes(realtime) == [4402]  # the upstream's session ends too
    assert len(realtime.bills) == 2  # nothing was made past the budget
    assert [e["type"] for e in realtime.received].count("response.create") == 2
    day = spent(relay, until=realtime.billed)
    assert day["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert day["spent"] <= daily and day["reserved"] == 0


TRANSCRIBED = {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}


@pytest.mark.parametrize(
    ("session", "code"),
    [
        ({"model": "gpt-4o-realtime-preview"}, "model-not-allowed"),
        # Transcription of the input is billed apart from responses: keyrelay cannot meter it.
        ({"audio": TRANSCRIBED}, "unpriced"),
    ],
)
def test_a_session_update_the_rules_refuse_ends_the_session(
    keyrelay_factory: KeyrelayFactory,
    realtime: RealtimeUpstream,
    session: dict[str, Any],
    code: str,
) -> None:
    relay = start(keyrelay_factory, realtime, daily=50.0)
    with client(relay).realtime.connect(model=MODEL) as connection:
        connection.session.update(session={"type": "realtime", **session})
        events = iter(connection)
        error = next(e for e in events if e.type == "error")
        assert error.error.code == code
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert closes(realtime) == [1008]
    # Only keyrelay's own update (the output cap) reached the upstream.
    assert [e["session"] for e in realtime.received] == [
        {"type": "realtime", "max_output_tokens": CAP}
    ]
    assert realtime.bills == []
    assert spent(relay)["spent"] == 0


def test_a_session_whose_budget_cannot_cover_a_response_is_refused_at_open(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime, daily=0.5)  # below one response's worst case
    with pytest.raises(InvalidStatus) as refused, client(relay).realtime.connect(model=MODEL):
        pass
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body)["type"].endswith("/budget-exhausted")
    assert realtime.handshakes == []
