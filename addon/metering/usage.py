"""A call's usage in the provider's own units, by name, from its answer.

Token counts are normalised to Anthropic's meaning: `input_tokens` excludes the cached part,
which is `cache_read_input_tokens` (OpenAI and Gemini count cached tokens inside prompt/input
tokens); Gemini's thinking is billed as output, and so counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

Usage = dict[str, float]  # whole numbers, but for fal's units (it may bill fractions)

INPUT = "input_tokens"
OUTPUT = "output_tokens"
CACHE_READ = "cache_read_input_tokens"
CACHE_WRITE = "cache_creation_input_tokens"
CHARACTERS = "characters"
UNITS = "units"
IMAGES = "images"
SECONDS = "seconds"
SEARCHES = "searches"
PREDICTIONS = "predictions"
NAMES = (
    INPUT,
    OUTPUT,
    CACHE_READ,
    CACHE_WRITE,
    CHARACTERS,
    UNITS,
    IMAGES,
    SECONDS,
    SEARCHES,
    PREDICTIONS,
)

MAX_JSON_BODY = 8 << 20  # a buffered answer larger than this is not parsed for usage


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def normalise(raw: Any) -> Usage:
    """A provider's `usage` object (Anthropic, OpenAI chat completions or Responses API)."""
    if not isinstance(raw, Mapping):
        return {}
    out: Usage = {}
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI chat completions
        details = raw.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
        prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
        if prompt is not None:
            out[INPUT] = max(0, prompt - (cached or 0))
        if completion is not None:
            out[OUTPUT] = completion
        if cached:
            out[CACHE_READ] = cached
        return out
    for name in (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE):
        if (n := _count(raw.get(name))) is not None:
            out[name] = n
    server = raw.get("server_tool_use")  # Anthropic's server tools, billed per use
    if isinstance(server, Mapping) and (n := _count(server.get("web_search_requests"))):
        out[SEARCHES] = n
    details = raw.get("input_tokens_details")  # OpenAI Responses API
    if isinstance(details, Mapping) and (cached := _count(details.get("cached_tokens"))):
        out[INPUT] = max(0, out.get(INPUT, 0) - cached)
        out[CACHE_READ] = cached
    return out


_GEMINI = (
    "promptTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
)


def normalise_gemini(raw: Any) -> Usage:
    """Gemini's `usageMetadata`. The prompt includes the cached part and excludes what tools
    returned to the model (`toolUsePromptTokenCount`), billed as input too; output is the
    candidates plus the thoughts. `totalTokenCount` is the sum of them all: any part of it no
    other field accounts for is counted as output (the dearer), never left out."""
    counts = [_count(raw.get(name)) for name in _GEMINI] if isinstance(raw, Mapping) else []
    if not any(n is not None for n in counts):
        return {}
    prompt, cached, tools, candidates, thoughts, total = (n or 0 for n in counts)
    out: Usage = {
        INPUT: max(0, prompt - cached) + tools,
        OUTPUT: max(candidates + thoughts, total - prompt - tools),
    }
    if cached:
        out[CACHE_READ] = cached
    return out


def from_headers(header: Callable[[str], str | None]) -> Usage:
    """ElevenLabs' `x-character-count` and fal's `x-fal-billable-units`."""
    out: Usage = {}
    for name, unit in (("x-character-count", CHARACTERS), ("x-fal-billable-units", UNITS)):
        value = header(name)
        if value is None:
            continue
        try:
            number = float(value.strip())
        except ValueError:
            continue
        if number >= 0 and number == number:  # not NaN
            out[unit] = round(number) if unit == CHARACTERS else number
    return out


def from_body(body: bytes) -> tuple[Usage, str | None]:
    """The usage and model of a whole JSON answer (a message, a chat completion, a response,
    a Gemini answer, or anything else carrying a top-level `usage`). A list is Gemini's
    streamGenerateContent without `alt=sse`: its last answer carries the final figures."""
    if not body or len(body) > MAX_JSON_BODY or body.lstrip()[:1] not in (b"{", b"["):
        return {}, None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}, None
    if isinstance(data, list) and data:
        data = data[-1]
    if not isinstance(data, dict):
        return {}, None
    if "usageMetadata" in data:
        model = data.get("modelVersion")
        return normalise_gemini(data["usageMetadata"]), model if isinstance(model, str) else None
    model = data.get("model")
    usage = normalise(data.get("usage"))
    if (images := _images(data)) is not None:
        usage[IMAGES] = images
    if (seconds := _seconds(data)) is not None:
        usage[SECONDS] = seconds
    if _made_prediction(data):
        usage[PREDICTIONS] = 1
    return usage, model if isinstance(model, str) else None


def _seconds(data: dict[str, Any]) -> float | None:
    """OpenAI's transcription usage (`{"type": "duration", "seconds": 9}`), or a video job
    (`"object": "video"`, `"seconds": "8"`: a string, as the API names it)."""
    usage = data.get("usage")
    if isinstance(usage, Mapping) and usage.get("type") == "duration":
        return seconds_of(usage.get("seconds"))
    if data.get("object") == "video":
        return seconds_of(data.get("seconds"))
    return None


def seconds_of(value: Any) -> float | None:
    """A count of seconds as OpenAI takes one: a number or a numeric string; None if neither."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < float("inf") else None


def _images(data: dict[str, Any]) -> int | None:
    """OpenAI's images answer: `data`, a list of images (`b64_json` or `url`), no `object`."""
    items = data.get("data")
    if "object" in data or not isinstance(items, list):
        return None
    if all(isinstance(i, dict) and ("b64_json" in i or "url" in i) for i in items):
        return len(items)
    return None


def _made_prediction(data: dict[str, Any]) -> bool:
    """EachLabs' answer to a prediction it took (`POST /v1/prediction`, `/v1/prediction/run`):
    `{"status": "success", "predictionID": …}`. A cancel's answer names the prediction too, with
    `"status": "cancelled"`: it made none. EachLabs bills per prediction, by model and inputs."""
    made = data.get("predictionID")
    return isinstance(made, str) and bool(made) and data.get("status") != "cancelled"
