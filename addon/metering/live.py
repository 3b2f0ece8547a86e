"""Gemini Live sessions (`BidiGenerateContent` over a WebSocket): what their messages say about
cost. Pure.

Shapes as @google/genai's live module types them (`LiveClientMessage`, `LiveServerMessage`):
the client's first message is `setup` {`model` ("models/<name>"), `generationConfig`
{`maxOutputTokens`}}; a turn is asked by `clientContent` with `turnComplete: true`, or
started by the server (on voice activity in `realtimeInput`, after a `toolResponse`). The
server's `serverContent` carries the turn (`modelTurn`, then `turnComplete`, `interrupted`
before it when cut short), or a `toolCall`; any server message may carry `usageMetadata`
{`promptTokenCount` (cached included), `cachedContentTokenCount`, `responseTokenCount`
(`candidatesTokenCount` in the unary API), `thoughtsTokenCount`, `toolUsePromptTokenCount`,
`totalTokenCount`, and by modality `promptTokensDetails`, `cacheTokensDetails`,
`responseTokensDetails` [{`modality`, `tokenCount`}]}: the bill of one turn (per turn, not
the session's running total, as Google's Live models report it).
proto3 JSON accepts snake_case too (`generation_config`, `max_output_tokens`, `usage_metadata`).

Usage is put in Realtime's terms (metering/realtime.py): text at a price's text rates, audio
(and images and video, and any count the details do not place) at its audio rates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from addon.metering import messages
from addon.metering.realtime import AUDIO_CACHE_READ, AUDIO_INPUT, AUDIO_OUTPUT
from addon.metering.usage import CACHE_READ, INPUT, OUTPUT, Usage

# Output tokens a turn may make when the setup names no cap: what Gemini lets a model make.
MAX_OUTPUT = 65_536
MAX_MESSAGE = 16 << 20  # a server message larger than this is not read (media)
# What a server message keyrelay reads says in its bytes (audio chunks of a running turn are not
# parsed).
MARKERS = (b"usageMetadata", b"usage_metadata", b"turnComplete", b"turn_complete")
_CONFIG = ("generationConfig", "generation_config")
_CAP = ("maxOutputTokens", "max_output_tokens")
# The server's last message before it ends a session: what keyrelay sends before its own close.
GO_AWAY = json.dumps({"goAway": {"timeLeft": "0s"}}).encode()


def message_of(content: bytes) -> dict[str, Any] | None:
    """A JSON object message, or None."""
    return messages.json_object(content, MAX_MESSAGE)


def field(data: Mapping[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def model_of(setup: Mapping[str, Any]) -> str | None:
    """The setup's model, without the `models/` its resource name starts with."""
    model = setup.get("model")
    if not isinstance(model, str) or not model:
        return None
    return model.removeprefix("models/")


def cap_setup(setup: dict[str, Any], rule: int | None) -> int:
    """The output cap a turn runs under (the setup's, at most `MAX_OUTPUT` and the rules'),
    written into the setup so that the provider holds it."""
    config = next((setup[k] for k in _CONFIG if k in setup), None)
    if not isinstance(config, dict):
        config = setup["generationConfig"] = {}
    asked = next((config[k] for k in _CAP if k in config), None)
    cap = asked if type(asked) is int and 0 < asked <= MAX_OUTPUT else MAX_OUTPUT
    cap = min(cap, rule) if rule else cap
    for name in _CAP:
        if name in config:
            config[name] = cap
    if not any(name in config for name in _CAP):
        config[_CAP[0]] = cap
    return cap


def asks_turn(message: Mapping[str, Any]) -> bool:
    """A client message the model answers with a turn: content that completes the user's turn.
    (What follows a tool's result, or voice activity, the server starts on its own.)"""
    content = field(message, "clientContent", "client_content")
    return isinstance(content, Mapping) and field(content, "turnComplete", "turn_complete") is True


def server_content(message: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = field(message, "serverContent", "server_content")
    return content if isinstance(content, Mapping) else None


def in_turn(message: Mapping[str, Any]) -> bool:
    """A server message that is part of a model's turn."""
    return (
        server_content(message) is not None or field(message, "toolCall", "tool_call") is not None
    )


def turn_complete(message: Mapping[str, Any]) -> bool:
    content = server_content(message)
    return content is not None and field(content, "turnComplete", "turn_complete") is True


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _text(details: Any) -> int:
    """The TEXT tokens of a by-modality list (the rest, and what it leaves out, count as audio)."""
    if not isinstance(details, list):
        return 0
    return sum(
        _count(field(d, "tokenCount", "token_count"))
        for d in details
        if isinstance(d, Mapping) and d.get("modality") == "TEXT"
    )


def usage_of(message: Mapping[str, Any]) -> Usage | None:
    """A server message's `usageMetadata` in Realtime's terms; None when it has none."""
    raw = field(message, "usageMetadata", "usage_metadata")
    if not isinstance(raw, Mapping):
        return None

    def count(camel: str, snake: str) -> int:
        return _count(field(raw, camel, snake))

    def details(camel: str, snake: str) -> Any:
        return field(raw, camel, snake)

    prompt = count("promptTokenCount", "prompt_token_count")
    cached = min(count("cachedContentTokenCount", "cached_content_token_count"), prompt)
    tools = count("toolUsePromptTokenCount", "tool_use_prompt_token_count")
    response = max(
        count("responseTokenCount", "response_token_count"),
        count("candidatesTokenCount", "candidates_token_count"),
    )
    thoughts = count("thoughtsTokenCount", "thoughts_token_count")
    total = count("totalTokenCount", "total_token_count")
    text_in = min(_text(details("promptTokensDetails", "prompt_tokens_details")), prompt)
    audio_in = prompt - text_in
    text_cached = min(_text(details("cacheTokensDetails", "cache_tokens_details")), cached, text_in)
    audio_cached = min(cached - text_cached, audio_in)
    text_out = min(_text(details("responseTokensDetails", "response_tokens_details")), response)
    # What the total counts beyond the rest is output, at the dearest rate (never left out).
    extra = max(0, total - prompt - tools - response - thoughts)
    usage: Usage = {
        INPUT: text_in - text_cached + tools,
        CACHE_READ: text_cached,
        AUDIO_INPUT: audio_in - audio_cached,
        AUDIO_CACHE_READ: audio_cached,
        OUTPUT: text_out + thoughts,
        AUDIO_OUTPUT: response - text_out + extra,
    }
    return {k: v for k, v in usage.items() if v}
