"""Gemini Live messages: the setup's model and cap, turns, and usage in Realtime's terms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.metering import live
from addon.metering.realtime import AUDIO_CACHE_READ, AUDIO_INPUT, AUDIO_OUTPUT
from addon.metering.usage import CACHE_READ, INPUT, OUTPUT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("models/gemini-live-2.5-flash-preview", "gemini-live-2.5-flash-preview"),
        ("gemini-2.0-flash-live-001", "gemini-2.0-flash-live-001"),
        ("tunedModels/mine", "tunedModels/mine"),  # held to models: as written
        ("", None),
        (12, None),
    ],
)
def test_the_setup_names_its_model(model: Any, name: str | None) -> None:
    assert live.model_of({"model": model}) == name


@pytest.mark.parametrize(
    ("setup", "rule", "cap", "written"),
    [
        ({}, None, live.MAX_OUTPUT, {"generationConfig": {"maxOutputTokens": live.MAX_OUTPUT}}),
        ({}, 100, 100, {"generationConfig": {"maxOutputTokens": 100}}),
        (
            {"generationConfig": {"maxOutputTokens": 50, "temperature": 1}},
            100,
            50,
            {"generationConfig": {"maxOutputTokens": 50, "temperature": 1}},
        ),
        (
            {"generation_config": {"max_output_tokens": 4000}},
            100,
            100,
            {"generation_config": {"max_output_tokens": 100}},
        ),
        (
            {"generationConfig": {"maxOutputTokens": 10**9}},
            None,
            live.MAX_OUTPUT,
            {"generationConfig": {"maxOutputTokens": live.MAX_OUTPUT}},
        ),
        (
            {"generationConfig": {"maxOutputTokens": "100"}},  # not a number: the most
            None,
            live.MAX_OUTPUT,
            {"generationConfig": {"maxOutputTokens": live.MAX_OUTPUT}},
        ),
    ],
)
def test_the_setup_is_sent_with_the_cap_a_turn_reserves(
    setup: dict[str, Any], rule: int | None, cap: int, written: dict[str, Any]
) -> None:
    assert live.cap_setup(setup, rule) == cap
    assert setup == written


def test_a_turn_is_asked_by_content_that_completes_it() -> None:
    turn = {"turns": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert live.asks_turn({"clientContent": {**turn, "turnComplete": True}})
    assert live.asks_turn({"client_content": {**turn, "turn_complete": True}})
    assert not live.asks_turn({"clientContent": turn})
    assert not live.asks_turn({"realtimeInput": {"audio": {"data": "AAAA"}}})
    assert not live.asks_turn({"toolResponse": {"functionResponses": []}})


def test_server_messages_of_a_turn() -> None:
    assert live.in_turn({"serverContent": {"modelTurn": {"parts": []}}})
    assert live.in_turn({"toolCall": {"functionCalls": []}})
    assert not live.in_turn({"setupComplete": {}})
    assert live.turn_complete({"serverContent": {"turnComplete": True}})
    assert not live.turn_complete({"serverContent": {"interrupted": True}})


def test_usage_is_split_by_modality_and_cache() -> None:
    message = {
        "usageMetadata": {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 300,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 400},
                {"modality": "AUDIO", "tokenCount": 600},
            ],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 100}],
            "responseTokenCount": 250,
            "responseTokensDetails": [
                {"modality": "TEXT", "tokenCount": 50},
                {"modality": "AUDIO", "tokenCount": 200},
            ],
            "thoughtsTokenCount": 10,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 1265,
        }
    }
    assert live.usage_of(message) == {
        INPUT: 300 + 5,
        CACHE_READ: 100,
        AUDIO_INPUT: 400,
        AUDIO_CACHE_READ: 200,
        OUTPUT: 50 + 10,
        AUDIO_OUTPUT: 200,
    }


def test_counts_the_details_do_not_place_are_priced_as_audio() -> None:
    message = {
        "usage_metadata": {
            "prompt_token_count": 100,
            "candidates_token_count": 40,  # the unary API's name
            "total_token_count": 150,  # 10 no field accounts for: output, the dearer
        }
    }
    assert live.usage_of(message) == {AUDIO_INPUT: 100, AUDIO_OUTPUT: 50}


@pytest.mark.parametrize("message", [{}, {"usageMetadata": None}, {"usageMetadata": []}])
def test_a_message_without_usage_has_none(message: dict[str, Any]) -> None:
    assert live.usage_of(message) is None


@pytest.mark.parametrize("content", [b"", b"[]", b"not json", b"\xff", b"{" + b" " * 10 + b"1"])
def test_what_is_not_a_json_object_is_no_message(content: bytes) -> None:
    assert live.message_of(content) is None


def test_go_away_is_what_gemini_sends_before_it_ends_a_session() -> None:
    assert json.loads(live.GO_AWAY) == {"goAway": {"timeLeft": "0s"}}
