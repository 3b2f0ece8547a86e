"""Fake providers whose usage depends on the request, so no fixed figure can pass a test.

Anthropic and OpenAI: input tokens = characters of the last message's text, output tokens =
max_tokens // 2, cached tokens = 7 when the text says "cached". ElevenLabs: characters = the
text's length. fal: billable units = the last group of the request id of the result fetched.
`anthropic_words`: a stream that bills each word it made, as Anthropic bills a stopped stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .upstream import Handler, RecordedRequest, ResponseWriter, UpstreamServer

CACHED = 7
GAP = 0.05  # between stream events


def _text(body: dict[str, Any]) -> str:
    if "input" in body:  # the Responses API
        return str(body["input"])
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def expected(body: dict[str, Any]) -> dict[str, int]:
    """The usage the fake reports for a request body, in keyrelay's (Anthropic's) terms."""
    text = _text(body)
    cap = body.get("max_tokens") or body.get("max_output_tokens") or 16
    usage = {"input_tokens": len(text), "output_tokens": cap // 2}
    if "cached" in text:
        usage["cache_read_input_tokens"] = CACHED
    return usage


def anthropic(req: RecordedRequest, w: ResponseWriter) -> None:
    body = req.json()
    u = expected(body)
    usage = {
        "input_tokens": u["input_tokens"],
        "output_tokens": u["output_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.get("cache_read_input_tokens", 0),
    }
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"]}
    if not body.get("stream"):
        w.send_json({**message, "content": [{"type": "text", "text": "hi"}], "usage": usage})
        return
    start = {**message, "content": [], "usage": {**usage, "output_tokens": 1}}
    out = u["output_tokens"]
    w.send_sse(
        [
            {"event": "message_start", "data": {"type": "message_start", "message": start}},
            {"event": "content_block_delta", "data": {"type": "content_block_delta"}},
            # Cumulative: a meter that summed these would count out // 3 + out.
            {
                "event": "message_delta",
                "data": {"type": "message_delta", "usage": {"output_tokens": out // 3}},
            },
            {
                "event": "message_delta",
                "data": {"type": "message_delta", "usage": {"output_tokens": out}},
            },
            {"event": "message_stop", "data": {"type": "message_stop"}},
        ],
        gap=float(body.get("metadata", {}).get("gap", GAP)),
    )


def anthropic_words(billed: list[dict[str, int]], gap: float) -> Handler:
    """An Anthropic stream of one-token words, `gap` seconds apart, up to max_tokens. Like
    Anthropic, it bills the input and every word it made, also when the client stopped it:
    `billed` gets the usage once the stream ends or breaks (the word being written counts)."""

    def handle(req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        usage = {"input_tokens": len(_text(body)), "output_tokens": 0}
        start = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"]}

        def events() -> Iterator[dict[str, Any]]:
            message = {**start, "content": [], "usage": {**usage, "output_tokens": 1}}
            yield {"event": "message_start", "data": {"type": "message_start", "message": message}}
            for _ in range(body["max_tokens"]):
                usage["output_tokens"] += 1
                delta = {"type": "text_delta", "text": " word"}
                yield {
                    "event": "content_block_delta",
                    "data": {"type": "content_block_delta", "index": 0, "delta": delta},
                }
            final = {"type": "message_delta", "usage": {"output_tokens": usage["output_tokens"]}}
            yield {"event": "message_delta", "data": final}
            yield {"event": "message_stop", "data": {"type": "message_stop"}}

        try:
            w.send_sse(events(), gap=gap)
        finally:
            billed.append(dict(usage))

    return handle


def chat_events(body: dict[str, Any]) -> list[bytes]:
    """What OpenAI streams for a chat completion, byte for byte (compact JSON, as OpenAI
    sends it): with `stream_options.include_usage`, `"usage":null` in every chunk and a
    usage-only chunk before [DONE]."""
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    u = expected(body)
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
    }
    pieces = [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}]
    events = []
    for i, delta in enumerate(pieces):
        chunk: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None if i < 2 else "stop"}],
        }
        if with_usage:
            chunk["usage"] = None
        events.append(chunk)
    if with_usage:
        usage = {
            "prompt_tokens": u["input_tokens"] + u.get("cache_read_input_tokens", 0),
            "completion_tokens": u["output_tokens"],
            "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": u.get("cache_read_input_tokens", 0)},
        }
        events.append({**base, "choices": [], "usage": usage})
    sse = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    return [*sse, b"data: [DONE]\n\n"]


def openai_chat(req: RecordedRequest, w: ResponseWriter) -> None:
    body = req.json()
    if body.get("stream"):
        w.send_chunks(chat_events(body), gap=GAP, content_type="text/event-stream")
        return
    u = expected(body)
    usage = {
        "prompt_tokens": u["input_tokens"] + u.get("cache_read_input_tokens", 0),
        "completion_tokens": u["output_tokens"],
        "prompt_tokens_details": {"cached_tokens": u.get("cache_read_input_tokens", 0)},
    }
    w.send_json(
        {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"], "usage": usage}
    )


def openai_responses(req: RecordedRequest, w: ResponseWriter) -> None:
    body = req.json()
    u = expected(body)
    usage = {
        "input_tokens": u["input_tokens"] + u.get("cache_read_input_tokens", 0),
        "input_tokens_details": {"cached_tokens": u.get("cache_read_input_tokens", 0)},
        "output_tokens": u["output_tokens"],
    }
    response = {"id": "resp_1", "object": "response", "model": body["model"], "usage": usage}
    if not body.get("stream"):
        w.send_json(response)
        return
    w.send_sse(
        [
            {
                "event": "response.created",
                "data": {"type": "response.created", "response": {**response, "usage": None}},
            },
            {
                "event": "response.output_text.delta",
                "data": {"type": "response.output_text.delta", "delta": "hi"},
            },
            {
                "event": "response.completed",
                "data": {"type": "response.completed", "response": response},
            },
        ],
        gap=GAP,
    )


def elevenlabs(req: RecordedRequest, w: ResponseWriter) -> None:
    text = req.json()["text"]
    headers = [("x-character-count", str(len(text))), ("request-id", "r1")]
    if req.path.endswith("/stream"):
        w.send_chunks(
            [b"ID3", b"\xff\xfb" * 50, b"\xff\xfb" * 50],
            gap=GAP,
            headers=headers,
            content_type="audio/mpeg",
        )
    else:
        w.send(200, b"ID3" + b"\xff\xfb" * 100, headers, content_type="audio/mpeg")


def fal_submit(req: RecordedRequest, w: ResponseWriter) -> None:
    """A request id (a UUID, as fal's) whose last group says how many units it will bill."""
    units = int(req.json().get("num_images", 1))
    w.send_json({"request_id": f"00000000-0000-4000-8000-{units:012d}"})


def fal_result(req: RecordedRequest, w: ResponseWriter) -> None:
    request_id = req.path.rsplit("/", 1)[-1]
    units = int(request_id.rsplit("-", 1)[-1])
    w.send_json({"images": []}, headers=[("x-fal-billable-units", str(units))])


def install(upstream: UpstreamServer) -> None:
    upstream.route("POST", "/v1/messages", anthropic, host="api.anthropic.com")
    upstream.route("POST", "/v1/chat/completions", openai_chat, host="api.openai.com")
    upstream.route("POST", "/v1/responses", openai_responses, host="api.openai.com")
    upstream.route("POST", "/v1/text-to-speech/", elevenlabs, host="api.elevenlabs.io")
    upstream.route("POST", "/fal-ai/", fal_submit, host="queue.fal.run")
    upstream.route("GET", "/fal-ai/", fal_result, host="queue.fal.run")
