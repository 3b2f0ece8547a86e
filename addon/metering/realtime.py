"""OpenAI Realtime sessions: what their events say about cost. Pure.

Shapes as the `openai` SDK types them (openai/types/realtime/): the client's `session.update`
(`session.model`, `session.max_output_tokens`; the beta's `max_response_output_tokens` too) and
`response.create` (`response.max_output_tokens`); the server's `session.created`,
`response.created` and `response.done`, whose `response.usage` is the response's bill:
`input_tokens` (cached included), `output_tokens`, `input_token_details` {`text_tokens`,
`audio_tokens`, `image_tokens`, `cached_tokens`, `cached_tokens_details` {text, audio, image}}
and `output_token_details` {`text_tokens`, `audio_tokens`}.

Audio has its own rates (`audio_input`, `audio_output`, `audio_cache_read` of a price), text
the usual ones. A count the details do not place is priced as the dearest kind it could be.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from addon.config.budget import Price
from addon.metering import prices
from addon.metering.usage import CACHE_READ, INPUT, OUTPUT, Usage

AUDIO_INPUT = "audio_input_tokens"
AUDIO_CACHE_READ = "cache_read_audio_tokens"
AUDIO_OUTPUT = "audio_output_tokens"
# OpenAI: "an integer between 1 and 4096 ... or inf" (a session's or a response's output cap).
MAX_OUTPUT = 4096
# Input tokens one response may be billed when the operation names no `reserve`: the largest
# context window of OpenAI's realtime models (gpt-4o-realtime-preview).
CONTEXT_TOKENS = 128_000
MAX_EVENT = 16 << 20  # a server message larger than this is not read (an audio chunk)
# What a server event keyrelay reads says in its bytes (others, audio deltas most, are not parsed).
MARKERS = (b"response.done", b"response.created", b"session.created")
CAP_FIELDS = ("max_output_tokens", "max_response_output_tokens")  # GA, beta


def event_of(content: bytes) -> dict[str, Any] | None:
    """A text message's JSON event, or None (not JSON, not an object with a type)."""
    if content.lstrip()[:1] != b"{":
        return None
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("type"), str) else None


def server_event(content: bytes) -> dict[str, Any] | None:
    """A server event keyrelay reads (sessions, responses), or None for the rest."""
    if len(content) > MAX_EVENT or not any(marker in content for marker in MARKERS):
        return None
    return event_of(content)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def usage_of(event: Mapping[str, Any]) -> Usage | None:
    """A `response.done` event's usage in keyrelay's terms; None for any other event (or one
    without usage: a response that failed before it ran is billed nothing)."""
    response = event.get("response")
    if event.get("type") != "response.done" or not isinstance(response, Mapping):
        return None
    raw = response.get("usage")
    if not isinstance(raw, Mapping):
        return None
    inputs = raw.get("input_token_details")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    cached_details = inputs.get("cached_tokens_details")
    cached_details = cached_details if isinstance(cached_details, Mapping) else {}
    outputs = raw.get("output_token_details")
    outputs = outputs if isinstance(outputs, Mapping) else {}
    total_in, total_out = _count(raw.get("input_tokens")), _count(raw.get("output_tokens"))
    cached = _count(inputs.get("cached_tokens"))
    cached_text = _count(cached_details.get("text_tokens"))
    cached_audio = max(cached - cached_text, _count(cached_details.get("audio_tokens")))
    text_in = _count(inputs.get("text_tokens"))
    # Images are text-priced or dearer: as audio, as is any input the details leave unplaced.
    audio_in = max(
        _count(inputs.get("audio_tokens")) + _count(inputs.get("image_tokens")),
        total_in - text_in,
    )
    text_out = _count(outputs.get("text_tokens"))
    audio_out = max(_count(outputs.get("audio_tokens")), total_out - text_out)
    usage: Usage = {
        INPUT: max(0, text_in - cached_text),
        CACHE_READ: min(cached_text, text_in),
        AUDIO_INPUT: max(0, audio_in - cached_audio),
        AUDIO_CACHE_READ: min(cached_audio, audio_in),
        OUTPUT: text_out,
        AUDIO_OUTPUT: audio_out,
    }
    return {k: v for k, v in usage.items() if v}


def _audio(price: Price) -> Price:
    """The price of audio tokens as a text price: its audio rates, else its text ones."""
    audio_in = price.audio_input or price.input
    return replace(
        price,
        input=audio_in,
        output=price.audio_output or price.output,
        cache_read=price.audio_cache_read or (audio_in if price.audio_input else price.cache_read),
    )


def cost(price: Price, usage: Usage) -> int:
    """Nano-dollars for a response's usage (text at the text rates, audio at the audio ones)."""
    text = {k: usage[k] for k in (INPUT, CACHE_READ, OUTPUT) if k in usage}
    audio = {
        INPUT: usage.get(AUDIO_INPUT, 0),
        CACHE_READ: usage.get(AUDIO_CACHE_READ, 0),
        OUTPUT: usage.get(AUDIO_OUTPUT, 0),
    }
    return prices.cost(price, text) + prices.cost(_audio(price), audio)


def worst_case(price: Price, output_cap: int, context: int) -> int:
    """Nano-dollars one response can cost at most: its whole context billed as input and its
    output cap made, each at the dearest rate it could be billed at."""
    audio = _audio(price)
    input_rate = max(price.input, price.cache_read, audio.input, audio.cache_read)
    output_rate = max(price.output, audio.output)
    per_million = context * input_rate + output_cap * output_rate
    return math.ceil(per_million * prices.NANO / 1_000_000)


def output_cap(asked: Any, rule: int | None) -> int:
    """The output cap a response runs under: what the session (or response) asked, `inf` or
    none being the most, lowered to the rules' max_tokens."""
    cap = asked if type(asked) is int and 0 < asked <= MAX_OUTPUT else MAX_OUTPUT
    return min(cap, rule) if rule else cap


def asked_cap(config: Mapping[str, Any]) -> Any:
    """The output cap a session's or a response's config names (GA or beta spelling)."""
    return next((config[f] for f in CAP_FIELDS if f in config), None)


def transcribes(config: Mapping[str, Any]) -> bool:
    """A session config that turns on what is billed apart from responses: input audio
    transcription (GA `audio.input.transcription`, beta `input_audio_transcription`), or a
    transcription session."""
    audio = config.get("audio")
    given = audio.get("input") if isinstance(audio, Mapping) else None
    transcription = given.get("transcription") if isinstance(given, Mapping) else None
    return (
        bool(transcription or config.get("input_audio_transcription"))
        or config.get("type") == "transcription"
    )


@dataclass(frozen=True, slots=True)
class Refused:
    """Why keyrelay ends a session: sent as the protocol's `error` event, then the close."""

    code: str  # the error event's `code`, a keyrelay problem type
    message: str
    close: int  # the WebSocket close code

    def event(self, event_id: str) -> bytes:
        error = {"type": "invalid_request_error", "code": self.code, "message": self.message}
        return json.dumps({"type": "error", "event_id": event_id, "error": error}).encode()


BUDGET_CLOSE = 4402  # private range (4000-4999); 402: payment required
POLICY_CLOSE = 1008  # RFC 6455: policy violation
