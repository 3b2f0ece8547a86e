"""OpenAI Realtime's events read for cost (addon/metering/realtime.py): `response.done` usage in
the shapes the `openai` SDK types, audio at audio rates, a response's worst case, the caps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeErrorEvent, ResponseDoneEvent

from addon.config.budget import Price
from addon.config.model import ConfigError, read
from addon.config.operations import OperationEntry
from addon.config.profiles import load
from addon.metering import realtime
from addon.metering.usage import CACHE_READ, INPUT, OUTPUT

GPT_REALTIME = {
    "model": "gpt-realtime*",
    "input": 4.0,
    "cache_read": 0.4,
    "output": 16.0,
    "audio_input": 32.0,
    "audio_cache_read": 0.4,
    "audio_output": 64.0,
}


def price(**rates: Any) -> Price:
    """A price as rules.yaml writes it (its defaults filled in as the rules' are)."""
    return read(Price, {"model": "*", **rates}, "rules.yaml")


def done(usage: dict[str, Any]) -> dict[str, Any]:
    event = {
        "type": "response.done",
        "event_id": "event_1",
        "response": {"id": "resp_1", "object": "realtime.response", "usage": usage},
    }
    ResponseDoneEvent.model_validate(event)  # the SDK's own type takes it
    return event


FULL = {
    "total_tokens": 1540,
    "input_tokens": 1200,
    "output_tokens": 340,
    "input_token_details": {
        "text_tokens": 400,
        "audio_tokens": 800,
        "image_tokens": 0,
        "cached_tokens": 500,
        "cached_tokens_details": {"text_tokens": 300, "audio_tokens": 200, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 40, "audio_tokens": 300},
}


def test_response_done_usage_is_split_into_text_and_audio_cached_or_not() -> None:
    assert realtime.usage_of(done(FULL)) == {
        INPUT: 100,
        CACHE_READ: 300,
        realtime.AUDIO_INPUT: 600,
        realtime.AUDIO_CACHE_READ: 200,
        OUTPUT: 40,
        realtime.AUDIO_OUTPUT: 300,
    }


def test_audio_is_priced_at_audio_rates() -> None:
    p = read(Price, GPT_REALTIME, "rules.yaml")
    usage = realtime.usage_of(done(FULL))
    assert usage is not None
    usd = (100 * 4 + 300 * 0.4 + 600 * 32 + 200 * 0.4 + 40 * 16 + 300 * 64) / 1e6
    assert realtime.cost(p, usage) == round(usd * 1e9)


def test_a_price_without_audio_rates_prices_audio_as_text() -> None:
    usage = {realtime.AUDIO_INPUT: 1_000_000, realtime.AUDIO_OUTPUT: 1_000_000}
    assert realtime.cost(price(input=4.0, output=16.0), usage) == 20 * 10**9


def test_a_cached_audio_token_without_a_rate_costs_an_audio_input_token() -> None:
    p = price(input=4.0, output=16.0, audio_input=32.0)
    assert realtime.cost(p, {realtime.AUDIO_CACHE_READ: 1_000_000}) == 32 * 10**9


def test_counts_the_details_do_not_place_are_priced_as_audio() -> None:
    """Totals without details (or details that add up to less): never under-counted."""
    usage = realtime.usage_of(done({"input_tokens": 50, "output_tokens": 20}))
    assert usage == {realtime.AUDIO_INPUT: 50, realtime.AUDIO_OUTPUT: 20}
    partial = {
        "input_tokens": 90,
        "output_tokens": 30,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 20},
        "output_token_details": {"text_tokens": 5},
    }
    assert realtime.usage_of(done(partial)) == {
        INPUT: 10,
        realtime.AUDIO_INPUT: 80,
        OUTPUT: 5,
        realtime.AUDIO_OUTPUT: 25,
    }


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.created", "response": {"id": "r", "usage": FULL}},
        {"type": "response.done", "response": {"id": "r", "status": "failed"}},
        {"type": "response.done", "response": "nonsense"},
    ],
)
def test_only_a_response_done_with_usage_says_a_cost(event: dict[str, Any]) -> None:
    assert realtime.usage_of(event) is None


def test_counts_that_are_not_whole_numbers_count_nothing() -> None:
    usage = {"input_tokens": -5, "output_tokens": True, "input_token_details": {"text_tokens": 1.5}}
    assert realtime.usage_of({"type": "response.done", "response": {"usage": usage}}) == {}


def test_a_responses_worst_case_is_its_context_and_cap_at_the_dearest_rates() -> None:
    p = read(Price, GPT_REALTIME, "rules.yaml")
    assert realtime.worst_case(p, 100, 32000) == (32000 * 32 + 100 * 64) * 1000


@pytest.mark.parametrize(
    ("asked", "rule", "cap"),
    [
        (None, None, 4096),
        ("inf", None, 4096),
        (200, None, 200),
        (200, 100, 100),
        ("inf", 100, 100),
        (50, 100, 50),
        (0, None, 4096),
        (True, None, 4096),
        (99999, None, 4096),
    ],
)
def test_a_responses_output_cap(asked: Any, rule: int | None, cap: int) -> None:
    assert realtime.output_cap(asked, rule) == cap


def test_caps_are_read_in_the_ga_and_the_beta_spelling() -> None:
    assert realtime.asked_cap({"max_output_tokens": 7}) == 7
    assert realtime.asked_cap({"max_response_output_tokens": "inf"}) == "inf"
    assert realtime.asked_cap({"voice": "alloy"}) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1]", b'{"no": "type"}', b'{"type": 3}', b"\xff{"],
)
def test_what_is_not_an_event_reads_as_none(content: bytes) -> None:
    assert realtime.event_of(content) is None


def test_server_events_keyrelay_does_not_read_are_not_parsed() -> None:
    delta = json.dumps({"type": "response.output_audio.delta", "delta": "AAAA"}).encode()
    assert realtime.server_event(delta) is None
    created = json.dumps({"type": "session.created", "session": {}}).encode()
    assert realtime.server_event(created) == {"type": "session.created", "session": {}}


def test_the_error_event_has_the_protocols_shape() -> None:
    refused = realtime.Refused("budget-exhausted", "no more", realtime.BUDGET_CLOSE)
    event = RealtimeErrorEvent.model_validate_json(refused.event("keyrelay_1"))
    assert event.error.code == "budget-exhausted" and event.error.message == "no more"


def test_audio_rates_and_the_session_meter_parse() -> None:
    p = read(Price, GPT_REALTIME, "rules.yaml")
    assert (p.audio_input, p.audio_output, p.audio_cache_read) == (32.0, 64.0, 0.4)
    assert p.covers("session")
    assert price(audio_input=10.0).audio_cache_read == 10.0  # none given: a whole input token
    with pytest.raises(ConfigError, match="number"):
        price(audio_output="lots")


def test_the_openai_profile_meters_realtime_sessions_with_a_context_bound() -> None:
    [socket] = [o for o in load("openai").operations if o.name == "realtime.socket"]
    assert socket.meter == "session" and socket.reserve == realtime.CONTEXT_TOKENS


@pytest.mark.parametrize(("meter", "reserve"), [("tokens", 10), ("session", 0), ("session", -1)])
def test_reserve_is_for_seconds_and_sessions_and_positive(meter: str, reserve: int) -> None:
    op = {"op": "GET api.openai.com/v1/realtime", "kind": "stream", "meter": meter}
    with pytest.raises(ConfigError) as refused:
        read(OperationEntry, {**op, "reserve": reserve}, "rules.yaml")
    assert refused.value.key == "reserve"


@pytest.mark.parametrize(
    ("config", "billed_apart"),
    [
        ({"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}, True),
        ({"type": "realtime", "audio": {"input": {"transcription": None}}}, False),
        ({"input_audio_transcription": {"model": "whisper-1"}}, True),  # the beta's spelling
        ({"type": "transcription"}, True),
        ({"type": "realtime", "audio": "nonsense"}, False),
        ({"type": "realtime", "instructions": "be brief"}, False),
    ],
)
def test_input_transcription_is_billed_apart(config: dict[str, Any], billed_apart: bool) -> None:
    assert realtime.transcribes(config) is billed_apart
