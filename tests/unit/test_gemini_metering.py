"""Gemini's usage (usageMetadata, whole and streamed), its request's worst case (the nested
cap, candidateCount, none named) and its model, named in the path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.config.budget import Price
from addon.metering import gemini, prices
from addon.metering.stream import StreamMeter
from addon.metering.usage import from_body, normalise_gemini

MODEL = "gemini-2.5-flash"
ENDPOINT = f"v1beta/models/{MODEL}:generateContent"


def answer(text: str, usage: dict[str, int], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL}


FINAL = {
    "promptTokenCount": 120,
    "cachedContentTokenCount": 100,
    "candidatesTokenCount": 9,
    "thoughtsTokenCount": 31,
    "totalTokenCount": 160,
}
# Each event's usage is the whole call's so far; the last carries the final figures.
EVENTS = [
    answer("Hel", {"promptTokenCount": 120, "totalTokenCount": 120}),
    answer("lo", {"promptTokenCount": 120, "candidatesTokenCount": 4, "totalTokenCount": 155}),
    answer("!", FINAL, finish="STOP"),
]
SSE = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in EVENTS)


def feed(meter: StreamMeter, data: bytes, size: int) -> bytes:
    out = [meter(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + meter(b"")


def test_usage_metadata_in_keyrelays_terms() -> None:
    # input excludes the cached part; thinking is billed as output.
    assert normalise_gemini(FINAL) == {
        "input_tokens": 20,
        "output_tokens": 40,
        "cache_read_input_tokens": 100,
    }
    # What tools returned to the model is billed as input too.
    with_tools = {"promptTokenCount": 10, "toolUsePromptTokenCount": 500, "candidatesTokenCount": 5}
    assert normalise_gemini(with_tools) == {"input_tokens": 510, "output_tokens": 5}
    # A total no field accounts for is never left out: the rest counts as output.
    unexplained = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 40}
    assert normalise_gemini(unexplained) == {"input_tokens": 10, "output_tokens": 30}
    assert normalise_gemini({}) == {} and normalise_gemini(None) == {}
    assert normalise_gemini({"promptTokenCount": -1, "candidatesTokenCount": "9"}) == {}


def test_a_whole_answer_and_a_list_of_them() -> None:
    usage, model = from_body(json.dumps(EVENTS[-1]).encode())
    assert usage == normalise_gemini(FINAL) and model == MODEL
    # streamGenerateContent without alt=sse: a JSON array, the last element final.
    usage, model = from_body(json.dumps(EVENTS).encode())
    assert usage == normalise_gemini(FINAL) and model == MODEL
    assert from_body(b"[]") == ({}, None)
    assert from_body(b'{"totalTokens": 31}') == ({}, None)  # countTokens: not a usage


@pytest.mark.parametrize("size", [1, 3, 17, 100_000])
def test_a_stream_split_anywhere_is_metered_from_its_last_event(size: int) -> None:
    meter = StreamMeter()
    assert feed(meter, SSE, size) == SSE  # every byte passes as it came
    assert meter.usage == normalise_gemini(FINAL)
    assert meter.model == MODEL and meter.complete


def test_a_stream_cut_before_its_finish_is_not_complete() -> None:
    meter = StreamMeter()
    cut = SSE[: SSE.index(b"STOP") - 40]
    feed(meter, cut, 64)
    assert not meter.complete
    assert meter.usage == {"input_tokens": 120, "output_tokens": 35}  # the last seen
    assert meter.cut_usage(128) is None  # thinking is not streamed: nothing bounds it


def test_every_candidate_must_finish_and_a_blocked_prompt_ends_the_stream() -> None:
    two = [
        {
            "candidates": [{"index": 0, "finishReason": "STOP"}, {"index": 1}],
            "usageMetadata": FINAL,
        },
        {"candidates": [{"index": 1, "finishReason": "MAX_TOKENS"}], "usageMetadata": FINAL},
    ]
    meter = StreamMeter()
    meter(b"data: " + json.dumps(two[0]).encode() + b"\n\n")
    assert not meter.complete
    meter(b"data: " + json.dumps(two[1]).encode() + b"\n\n")
    assert meter.complete
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 8},
    }
    meter = StreamMeter()
    meter(b"data: " + json.dumps(blocked).encode() + b"\n\n")
    assert meter.complete and meter.usage == {"input_tokens": 8, "output_tokens": 0}


PRICE = Price(model="gemini-2.5-flash*", input=0.30, output=2.50, cache_read=0.03)


def facts(config: dict[str, Any] | None, key: str = "generationConfig") -> prices.RequestFacts:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
    if config is not None:
        body[key] = config
    return prices.read_body(json.dumps(body).encode())[0]


def test_the_nested_cap_and_candidate_count_set_the_worst_case() -> None:
    capped = facts({"maxOutputTokens": 100, "candidateCount": 3})
    assert (capped.max_output, capped.choices) == (100, 3)
    # Each candidate may make the cap, at the output price; the input at the dearest.
    expected = (capped.input_bound * 0.30 + 300 * 2.50) * 1000
    assert prices.worst_case(PRICE, capped, None, "POST") == pytest.approx(expected, abs=1)
    # Google reads either spelling (the larger counts when both are given).
    snake = facts({"max_output_tokens": 100, "maxOutputTokens": 50}, "generation_config")
    assert snake.max_output == 100
    # No cap, 0 (proto3: unset) or a config without one: the model may make its own most,
    # whatever rules.yaml's validation.max_tokens says (keyrelay sends no cap).
    for unset in (facts(None), facts({}), facts({"maxOutputTokens": 0}), facts({"topK": 3})):
        assert unset.max_output == gemini.MAX_OUTPUT
        assert prices.output_tokens(unset, 1024) == gemini.MAX_OUTPUT


@pytest.mark.parametrize(
    "config",
    [
        {"maxOutputTokens": "100"},
        {"maxOutputTokens": 1.5},
        {"candidate_count": -1},
        {"maxOutputTokens": True},
    ],
)
def test_a_count_google_reads_but_keyrelay_would_guess_at_is_refused(
    config: dict[str, Any],
) -> None:
    body = {"contents": [], "generationConfig": config}
    assert "must be a whole number" in (prices.invalid_count(body) or "")


def test_the_model_is_read_from_the_path() -> None:
    flash = Price(model="gemini-2.5-flash*", output=2.5)
    pro = Price(model="gemini-2.5-pro*", output=15.0)
    listed = [flash, pro]
    assert prices.price_for(listed, None, ENDPOINT) is flash
    assert prices.price_for(listed, None, "v1/models/gemini-2.5-pro:streamGenerateContent") is pro
    assert prices.price_for(listed, "gemini-2.5-pro-preview", ENDPOINT) is pro  # the answer's
    assert prices.price_for(listed, None, "v1/models/gemini-2.5-pro") is None  # no method
    assert gemini.path_model("v1beta/tunedModels/x:generateContent") is None


@pytest.mark.parametrize(
    "extra",
    [
        {"cachedContent": "cachedContents/abc"},
        {"tools": [{"googleSearch": {}}]},
        {"tools": [{"google_search_retrieval": {}}]},
        {"contents": [{"parts": [{"fileData": {"fileUri": "files/x", "mimeType": "video/mp4"}}]}]},
        {"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "UklG"}}]}]},
        {
            "contents": [
                {"parts": [{"inline_data": {"mime_type": "application/pdf", "data": "JV"}}]}
            ]
        },
    ],
)
def test_what_a_gemini_body_does_not_bound_is_named(extra: dict[str, Any]) -> None:
    """Input the body does not show (a cache, a file by reference), or cannot bound (inline
    audio, video, a document), or a per-prompt charge (grounding): never reserved as if free."""
    body = {"contents": [{"parts": [{"text": "hi"}]}], **extra}
    assert gemini.unpriced(body) is not None
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    plain = {
        "contents": [{"parts": [{"text": "hi"}, image]}],
        "tools": [{"functionDeclarations": []}],
    }
    assert gemini.unpriced(plain) is None
