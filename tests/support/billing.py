"""Fake providers that bill as the providers document, for the budget property test
(tests/unit/test_budget_property.py).

For each request keyrelay forwards, `Upstream.answer` decides what the provider bills, from
its own price list (PRICES, never keyrelay's metering code), and writes the answer the
provider would send: the usage in the body, the stream or a header, or none. What it bills:

- tokens. A byte-level BPE token is at least one byte of UTF-8 text, so a text of b bytes is
  at most b tokens (English runs near four characters a token; rare characters such as
  cuneiform take several); each message adds a few tokens of framing, and Anthropic adds its
  tool-use system prompt (TOOL_PROMPT) when the request has tools. Output: at most the
  request's `max_tokens` (or kin) per choice, for each of `n` choices; without a cap, up to
  the model's own most (MAX_OUTPUT). A stream that stops early bills its input, and the output
  made by then: Anthropic, what it streamed plus at most STOP_LAG tokens made before it saw
  the stop (but Claude 4's extended thinking streams a summary and bills the whole thinking);
  OpenAI, anything up to the whole answer. A whole (not streamed) answer is billed whole, also
  when its client left before it came: the provider made it.
- characters (OpenAI speech, ElevenLabs): each character of the text.
- images (OpenAI): each image made.
- fal: a job's billable units, at most its endpoint's `reserve`, billed when the job runs
  (at the submit), whatever fetches its result later.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

F = Fraction
MILLION = 1_000_000
ZERO = F(0)


@dataclass(frozen=True)
class Rates:
    """USD per million tokens (input, output, cache_read, cache_write) or characters; per image;
    per fal unit."""

    input: Fraction = ZERO
    output: Fraction = ZERO
    cache_read: Fraction = ZERO
    cache_write: Fraction = ZERO
    characters: Fraction = ZERO
    image: Fraction = ZERO
    unit: Fraction = ZERO


def _tokens(input: str, output: str, cache_read: str, cache_write: str | None = None) -> Rates:
    # OpenAI bills no cache write: priced as plain input, so keyrelay reserves no more for it.
    return Rates(F(input), F(output), F(cache_read), F(cache_write or input))


# What the providers charge (model, or fal app -> rates). rules.yaml gets the same numbers.
PRICES: dict[str, dict[str, Rates]] = {
    "openai": {
        "gpt-4o": _tokens("2.5", "10", "1.25"),
        "gpt-4o-mini": _tokens("0.15", "0.6", "0.075"),
        "o4-mini": _tokens("1.1", "4.4", "0.275"),
        "gpt-image-1": Rates(image=F("0.04")),
        "dall-e-3": Rates(image=F("0.08")),
        "dall-e-2": Rates(image=F("0.02")),
        "tts-1": Rates(characters=F(15)),
        "tts-1-hd": Rates(characters=F(30)),
    },
    "anthropic": {
        "claude-haiku-4-5": _tokens("1", "5", "0.1", "1.25"),
        "claude-sonnet-4-5": _tokens("3", "15", "0.3", "3.75"),
    },
    "elevenlabs": {  # "*": the default model (eleven_multilingual_v2), or one named otherwise
        "eleven_flash_v2_5": Rates(characters=F(150)),
        "*": Rates(characters=F(300)),
    },
    "fal": {"fal-ai/flux": Rates(unit=F("0.025")), "fal-ai/flux-pro": Rates(unit=F("0.05"))},
}
FAL_RESERVE = {"fal-ai/flux": 4, "fal-ai/flux-pro": 2}  # units a submit reserves, per app
FAL_APPS = {"fal-ai/flux": ("dev", "schnell"), "fal-ai/flux-pro": ("v1.1",)}
# The snapshot each model's answer may name (priced as its family).
SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
}
MAX_OUTPUT = {"gpt-4o": 16_384, "gpt-4o-mini": 16_384, "o4-mini": 100_000}  # without a cap
CHAT_MODELS = ("gpt-4o", "gpt-4o-mini")
RESPONSES_MODELS = ("gpt-4o", "gpt-4o-mini", "o4-mini")
IMAGE_MODELS = ("gpt-image-1", "dall-e-3", "dall-e-2")
SPEECH_MODELS = ("tts-1", "tts-1-hd")
CLAUDE_MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5")
TOKEN_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")

FRAME = 4  # tokens of framing per message (role markers)
PRIMING = 3  # tokens that prime the reply
TOOL_PROMPT = 346  # Anthropic's tool-use system prompt (Claude 4, tool_choice auto), billed input
STOP_LAG = 128  # tokens Anthropic makes between a client's stop and noticing it

WORDS = ("the", "budget", "holds", "money", "stream", "token", "relay", "answer", "cost", "key")
# Characters far from any tokenizer's merges: four UTF-8 bytes, up to four tokens each.
RARE = [chr(c) for c in range(0x12000, 0x12100)] + [chr(c) for c in range(0x20000, 0x20100)]


def text(rng: random.Random, alphabet: str, chars: int) -> str:
    if alphabet == "rare":
        return "".join(rng.choice(RARE) for _ in range(chars))
    out, size = [], 0
    while size < chars:
        out.append(rng.choice(WORDS))
        size += len(out[-1]) + 1
    return " ".join(out)[:chars]


def rules_prices() -> dict[str, list[dict[str, Any]]]:
    """Each provider's `prices:` for rules.yaml: PRICES, in keyrelay's terms."""
    out: dict[str, list[dict[str, Any]]] = {}
    for provider, table in PRICES.items():
        entries = []
        for name, rates in table.items():
            if provider == "fal":
                entry: dict[str, Any] = {"endpoint": f"{name}/*", "reserve": FAL_RESERVE[name]}
            else:
                entry = {"model": name}
            entry.update({k: float(v) for k, v in vars(rates).items() if v})
            entries.append(entry)
        out[provider] = entries
    return out


@dataclass
class Job:
    """A fal queue request: billed when it runs, its result fetched later by its caller."""

    id: str
    app: str  # "fal-ai/flux"
    units: float
    early: bool  # the caller asks for the result once before it is ready


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    streamed: bool
    bill: Callable[[int], Fraction]  # USD billed, given how many bytes of the body went out


@dataclass
class _Events:
    """A server-sent event stream, and for each event the output tokens made by the time the
    provider wrote it, and where it starts and where its data line ends."""

    parts: list[bytes] = field(default_factory=list)
    marks: list[tuple[int, int, int]] = field(default_factory=list)  # start, data line end, made
    size: int = 0

    def add(self, data: Any, made: int, event: str | None = None) -> None:
        head = f"event: {event}\n".encode() if event else b""
        payload = data if isinstance(data, bytes) else _dumps(data)
        line = b"data: " + payload + b"\n"
        self.marks.append((self.size, self.size + len(head) + len(line), made))
        self.parts.append(head + line + b"\n")
        self.size += len(head) + len(line) + 1

    def made(self, sent: int) -> tuple[int, int]:
        """Output made when the last event the client got any of was written; and when the last
        one whose data line it got whole was."""
        touched = whole = 0
        for start, line_end, made in self.marks:
            if start < sent:
                touched = made
            if line_end <= sent:
                whole = made
        return touched, whole


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def token_cost(
    rates: Rates, *, fresh: int = 0, cache_read: int = 0, cache_write: int = 0, output: int = 0
) -> Fraction:
    return (
        fresh * rates.input
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
        + output * rates.output
    ) / MILLION


def cap_of(body: dict[str, Any]) -> int | None:
    caps = [body[name] for name in TOKEN_CAPS if isinstance(body.get(name), int)]
    return max(caps) if caps else None


class Upstream:
    """The providers. Deterministic for a given rng."""

    def __init__(self, rng: random.Random, greed: float = 0.3) -> None:
        self.rng = rng
        # How often a text tokenizes at its worst (a token per byte), and an answer runs to its
        # cap: a greedy provider bills near each request's worst case.
        self.greed = greed
        self.serial = 0

    def answer(
        self,
        op: str,
        body: dict[str, Any] | None,
        *,
        path: str,
        stream: bool,
        says_usage: bool,
        job: Job | None,
    ) -> Answer:
        """What the provider answers to `body` (as keyrelay forwarded it), and bills."""
        self.serial += 1
        if op in ("chat", "responses", "messages"):
            assert body is not None
            return self._tokens(op, body, says_usage)
        if op == "images":
            assert body is not None
            return self._images(body)
        if op in ("speech", "tts"):
            assert body is not None
            return self._speech(op, body, path, stream, says_usage)
        return self._fal(op, body, says_usage, job)

    def error(self, status: int) -> Answer:
        body = _dumps({"error": {"type": "overloaded_error", "message": "try again later"}})
        return Answer(status, [("content-type", "application/json")], body, False, _free)

    # -- tokens ---------------------------------------------------------------------------------

    def _input(self, texts: list[str], messages: int) -> int:
        dense = self.rng.random() < self.greed
        total = FRAME * messages + PRIMING
        for t in texts:
            size = len(t.encode())
            total += size if dense or size < 3 else self.rng.randint(size // 6, size // 3)
        return total

    def _length(self, limit: int) -> int:
        pick = self.rng.random()
        if pick < self.greed:
            return limit  # wrote until the cap
        if pick < (1 + self.greed) / 2:
            return self.rng.randint(1, min(limit, 64))
        return self.rng.randint(1, limit)

    def _pieces(self, tokens: int) -> list[int]:
        """Output split into stream deltas of a few tokens (a few dozen deltas at most)."""
        most = max(1, min(16, tokens // 24 + 1))
        pieces = []
        while tokens > 0:
            pieces.append(min(tokens, self.rng.randint(1, most)))
            tokens -= pieces[-1]
        return pieces

    def _written(self, tokens: int, alphabet: str) -> str:
        """Text for `tokens` output tokens: at least one UTF-8 byte per token."""
        if alphabet == "rare":
            return text(self.rng, "rare", -(-tokens // 4))
        return text(self.rng, "ascii", self.rng.randint(tokens, 2 * tokens))

    def _tokens(self, op: str, body: dict[str, Any], says_usage: bool) -> Answer:
        rng = self.rng
        model = body["model"]
        provider = "anthropic" if op == "messages" else "openai"
        rates = PRICES[provider][model]
        texts = _texts(body)
        messages = len(body.get("messages") or []) or 1
        prompt = self._input(texts, messages)
        if op == "messages" and body.get("tools"):
            prompt += TOOL_PROMPT
        cap = cap_of(body)
        limit = cap if cap is not None else MAX_OUTPUT[model]
        named = SNAPSHOTS[model] if rng.random() < 0.5 else model
        alphabet = "rare" if any(any(c in RARE_SET for c in t[:4]) for t in texts) else "ascii"
        if op == "messages":
            return self._claude(body, rates, prompt, limit, named, alphabet, says_usage)
        choices = body.get("n") or 1
        lengths = [self._length(limit) for _ in range(choices)]
        reasoning = rng.randint(0, lengths[0]) if model.startswith("o") else 0
        cached = rng.randint(0, prompt) if prompt >= 1024 and rng.random() < 0.5 else 0
        total = sum(lengths)

        def cost(output: int) -> Fraction:
            return token_cost(rates, fresh=prompt - cached, cache_read=cached, output=output)

        if op == "chat":
            usage: dict[str, Any] = {
                "prompt_tokens": prompt,
                "completion_tokens": total,
                "total_tokens": prompt + total,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        else:
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": total,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + total,
            }
        if not body.get("stream"):
            if op == "chat":
                answer: dict[str, Any] = {
                    "id": f"chatcmpl-{self.serial}",
                    "object": "chat.completion",
                    "created": 1,
                    "model": named,
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": self._written(n, "ascii")},
                            "finish_reason": "length" if n == limit else "stop",
                        }
                        for i, n in enumerate(lengths)
                    ],
                }
            else:
                answer = self._response(named, lengths[0] - reasoning, cap, total)
            if says_usage:
                answer["usage"] = usage
            return _json_answer(answer, lambda _: cost(total))
        if op == "chat":
            events = self._chat_events(body, named, lengths, limit, usage)
        else:
            events = self._response_events(named, lengths[0], reasoning, cap, usage)
        share = rng.random()  # how much of the rest OpenAI makes after the client leaves

        def bill(sent: int) -> Fraction:
            if sent >= events.size:
                return cost(total)
            touched, _ = events.made(sent)
            return cost(touched + round(share * (total - touched)))

        return _sse(events, bill)

    def _chat_events(
        self,
        body: dict[str, Any],
        model: str,
        lengths: list[int],
        limit: int,
        usage: dict[str, Any],
    ) -> _Events:
        events = _Events()
        base = {"id": f"chatcmpl-{self.serial}", "object": "chat.completion.chunk", "created": 1}
        base["model"] = model
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        nulls: dict[str, Any] = {"usage": None} if with_usage else {}

        def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice], **nulls}

        for i in range(len(lengths)):
            events.add(chunk(i, {"role": "assistant", "content": ""}), 0)
        queues = [self._pieces(n) for n in lengths]
        made = 0
        while any(queues):
            for i, queue in enumerate(queues):
                if queue:
                    made += queue[0]
                    events.add(chunk(i, {"content": self._written(queue.pop(0), "ascii")}), made)
        for i, n in enumerate(lengths):
            events.add(chunk(i, {}, "length" if n == limit else "stop"), made)
        if with_usage:
            events.add({**base, "choices": [], "usage": usage}, made)
        events.add(b"[DONE]", made)
        return events

    def _response(self, model: str, visible: int, cap: int | None, total: int) -> dict[str, Any]:
        done = cap is not None and total >= cap
        return {
            "id": f"resp_{self.serial}",
            "object": "response",
            "created_at": 1,
            "status": "incomplete" if done else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if done else None,
            "model": model,
            "output": [
                {
                    "id": f"msg_{self.serial}",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": self._written(visible, "ascii")}],
                }
            ],
        }

    def _response_events(
        self, model: str, length: int, reasoning: int, cap: int | None, usage: dict[str, Any]
    ) -> _Events:
        events = _Events()
        final = self._response(model, 0, cap, length)
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        seq = iter(range(1 << 30))

        def add(kind: str, made: int, **fields: Any) -> None:
            events.add({"type": kind, "sequence_number": next(seq), **fields}, made, kind)

        add("response.created", 0, response=started)
        add("response.in_progress", 0, response=started)
        item = {"id": f"msg_{self.serial}", "type": "message", "role": "assistant", "content": []}
        if reasoning:
            thought = {"id": f"rs_{self.serial}", "type": "reasoning", "summary": []}
            add("response.output_item.added", 0, output_index=0, item=thought)
            add("response.output_item.done", reasoning, output_index=0, item=thought)
        add("response.output_item.added", reasoning, output_index=1, item=item)
        made = reasoning
        for piece in self._pieces(length - reasoning):
            made += piece
            delta = self._written(piece, "ascii")
            add("response.output_text.delta", made, item_id=item["id"], delta=delta)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        add(kind, made, response={**final, "usage": usage})
        return events

    def _claude(
        self,
        body: dict[str, Any],
        rates: Rates,
        prompt: int,
        limit: int,
        model: str,
        alphabet: str,
        says_usage: bool,
    ) -> Answer:
        rng = self.rng
        # Part of a cached prefix (a system block with cache_control) read or written.
        read = written = 0
        if "cache_control" in json.dumps(body.get("system", "")):
            part = rng.randint(0, prompt)
            read, written = (part, 0) if rng.random() < 0.5 else (0, part)
        fresh = prompt - read - written
        thinking = 0
        if isinstance(body.get("thinking"), dict):
            most = min(body["thinking"]["budget_tokens"], limit - 1)
            thinking = most if rng.random() < self.greed else rng.randint(1, most)
        length = self._length(limit - thinking)
        tools = bool(body.get("tools")) and length >= 8 and rng.random() < 0.5
        tool_tokens = rng.randint(8, min(40, length)) if tools else 0
        total = thinking + length
        usage = {
            "input_tokens": fresh,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": total,
        }

        def cost(output: int) -> Fraction:
            return token_cost(
                rates, fresh=fresh, cache_read=read, cache_write=written, output=output
            )

        stop = "max_tokens" if total >= limit else ("tool_use" if tools else "end_turn")
        message = {"id": f"msg_{self.serial}", "type": "message", "role": "assistant"}
        message["model"] = model
        call = {"type": "tool_use", "id": f"toolu_{self.serial}", "name": "get_weather"}
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if thinking:
                summary = self._written(max(1, thinking // 8), alphabet)
                content.append({"type": "thinking", "thinking": summary, "signature": "EqQB"})
            content.append({"type": "text", "text": self._written(length - tool_tokens, alphabet)})
            if tools:
                content.append({**call, "input": {"city": self._written(tool_tokens, "ascii")}})
            answer: dict[str, Any] = {**message, "content": content, "stop_reason": stop}
            if says_usage:
                answer["usage"] = usage
            return _json_answer(answer, lambda _: cost(total))
        events = _Events()
        started = {**usage, "output_tokens": 1}  # Anthropic's start says 1: the rest comes last
        start: dict[str, Any] = {**message, "content": [], "stop_reason": None, "usage": started}
        events.add({"type": "message_start", "message": start}, 0, "message_start")
        made = 0
        index = 0

        def block(first: dict[str, Any], deltas: list[tuple[dict[str, Any], int]]) -> None:
            nonlocal made, index
            start = {"type": "content_block_start", "index": index, "content_block": first}
            events.add(start, made, "content_block_start")
            for delta, tokens in deltas:
                made += tokens
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                events.add(event, made, "content_block_delta")
                if rng.random() < 0.05:
                    events.add({"type": "ping"}, made, "ping")
            events.add({"type": "content_block_stop", "index": index}, made, "content_block_stop")
            index += 1

        if thinking:
            # Claude 4 streams a summary of its thinking and bills the whole of it.
            pieces = self._pieces_of(thinking, rng.randint(1, 12))
            summarised = [
                ({"type": "thinking_delta", "thinking": self._written(max(1, n // 8), alphabet)}, n)
                for n in pieces
            ]
            signature = ({"type": "signature_delta", "signature": "EqQB" + "A" * 40}, 0)
            block({"type": "thinking", "thinking": ""}, [*summarised, signature])
        said = length - tool_tokens
        deltas = [
            ({"type": "text_delta", "text": self._written(n, alphabet)}, n)
            for n in self._pieces(said)
        ]
        block({"type": "text", "text": ""}, deltas)
        if tools:
            made += 3  # the tool's name and id
            args = [
                ({"type": "input_json_delta", "partial_json": self._written(n, "ascii")}, n)
                for n in self._pieces(tool_tokens - 3)
            ]
            block({**call, "input": {}}, args)
        delta = {"stop_reason": stop, "stop_sequence": None}
        final = {"type": "message_delta", "delta": delta, "usage": {"output_tokens": total}}
        events.add(final, made, "message_delta")
        events.add({"type": "message_stop"}, made, "message_stop")
        lag = rng.randint(0, STOP_LAG)

        def bill(sent: int) -> Fraction:
            if sent >= events.size:
                return cost(total)
            touched, whole = events.made(sent)
            return cost(max(touched, min(total, whole + lag)))

        return _sse(events, bill)

    def _pieces_of(self, tokens: int, count: int) -> list[int]:
        cuts = sorted(self.rng.sample(range(1, tokens), min(count, tokens) - 1))
        return [b - a for a, b in zip([0, *cuts], [*cuts, tokens], strict=True)]

    # -- images, characters, fal ----------------------------------------------------------------

    def _images(self, body: dict[str, Any]) -> Answer:
        model, n = body["model"], body.get("n") or 1
        if model == "dall-e-3" and n != 1:
            return self.error(400)  # dall-e-3 makes one image a request
        key = "b64_json" if model == "gpt-image-1" else "url"
        data = [{key: base64.b64encode(self.rng.randbytes(48)).decode()} for _ in range(n)]
        answer: dict[str, Any] = {"created": 1, "data": data}
        if model == "gpt-image-1":  # its token counts; the image price covers them
            answer["usage"] = {"input_tokens": 20, "output_tokens": 4160 * n, "total_tokens": 0}
        each = PRICES["openai"][model].image
        return _json_answer(answer, lambda _: n * each)

    def _speech(
        self, op: str, body: dict[str, Any], path: str, stream: bool, says_usage: bool
    ) -> Answer:
        if op == "speech":
            spoken, rates = body["input"], PRICES["openai"][body["model"]]
        else:
            table = PRICES["elevenlabs"]
            spoken, rates = body["text"], table.get(body.get("model_id") or "*", table["*"])
        price = len(spoken) * rates.characters / MILLION
        headers = [("content-type", "audio/mpeg"), ("request-id", f"req-{self.serial}")]
        if op == "tts" and says_usage:
            headers.append(("x-character-count", str(len(spoken))))
        audio = b"ID3" + self.rng.randbytes(64 + 4 * len(spoken))
        streamed = stream or "/stream" in path  # chunked audio, read as it comes
        if path.endswith("/with-timestamps"):
            headers[0] = ("content-type", "application/json")
            audio = _dumps({"audio_base64": base64.b64encode(audio).decode(), "alignment": None})
        return Answer(200, headers, audio, streamed, lambda _: price)

    def _fal(
        self, op: str, body: dict[str, Any] | None, says_usage: bool, job: Job | None
    ) -> Answer:
        rng = self.rng
        json_type = ("content-type", "application/json")
        if op in ("fal.submit", "fal.run"):
            assert body is not None and job is not None
            unit = PRICES["fal"][job.app].unit
            if op == "fal.submit":
                answer = {
                    "request_id": job.id,
                    "response_url": f"https://queue.fal.run/{job.app}/requests/{job.id}",
                    "status_url": f"https://queue.fal.run/{job.app}/requests/{job.id}/status",
                    "cancel_url": f"https://queue.fal.run/{job.app}/requests/{job.id}/cancel",
                    "queue_position": rng.randint(0, 3),
                }
                headers = [json_type, ("x-fal-request-id", job.id)]
                return Answer(200, headers, _dumps(answer), False, lambda _: F(job.units) * unit)
            headers = [json_type]
            if says_usage:
                headers.append(("x-fal-billable-units", _units(job.units)))
            result = _dumps({"images": [{"url": "https://fal.media/x.png"}], "seed": 1})
            return Answer(200, headers, result, False, lambda _: F(job.units) * unit)
        assert job is not None
        if op == "fal.status":
            answer = {"status": "COMPLETED", "request_id": job.id}
            return Answer(200, [json_type], _dumps(answer), False, _free)
        if op == "fal.early":
            detail = _dumps({"detail": "Request is still in progress"})
            return Answer(400, [json_type], detail, False, _free)
        headers = [json_type]
        if says_usage:
            headers.append(("x-fal-billable-units", _units(job.units)))
        result = _dumps({"images": [{"url": "https://fal.media/x.png", "width": 1024}]})
        return Answer(200, headers, result, False, _free)  # billed at the submit

    def job(self, app: str) -> Job:
        """A fal job's id and the units it will bill (at most its endpoint's `reserve`)."""
        rng, reserve = self.rng, FAL_RESERVE[app]
        pick = rng.random()
        if pick < 0.3:
            units: float = reserve
        elif pick < 0.6:
            units = rng.randint(1, 4 * reserve) / 4
        else:
            units = round(rng.uniform(0.001, reserve), 3)
        uuid = f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}"
        uuid += f"-8{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}"
        return Job(uuid, app, units, early=rng.random() < 0.15)


RARE_SET = frozenset(RARE)


def _free(_: int) -> Fraction:
    return F(0)


def _units(units: float) -> str:
    return str(int(units)) if units == int(units) else repr(units)


def _json_answer(answer: dict[str, Any], bill: Callable[[int], Fraction]) -> Answer:
    return Answer(200, [("content-type", "application/json")], _dumps(answer), False, bill)


def _sse(events: _Events, bill: Callable[[int], Fraction]) -> Answer:
    headers = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
    return Answer(200, headers, b"".join(events.parts), True, bill)


def _texts(body: dict[str, Any]) -> list[str]:
    """Every text the model reads: system, messages (strings or text blocks), Responses input
    and instructions, tool definitions."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item.get("text", item.get("content")) if isinstance(item, dict) else item)

    for name in ("system", "messages", "input", "instructions"):
        walk(body.get(name))
    if body.get("tools"):
        out.append(json.dumps(body["tools"]))
    return out
