"""Fake providers that bill as the real ones do, into a ledger, whatever their answers say.

The review of budgets spent past a small daily budget by sending what a signed-in browser user
can send. To see what such a run would have cost, these fakes keep the provider's side of the
books: every request that reaches them is billed, from their own price list (PROVIDER_PRICES,
the providers' published prices, written here and not taken from keyrelay), when the provider
would bill it: a non-streamed answer once it is generated (also when the client has gone), a
stream for every token it made (also when it was stopped), a queued job when it runs (whether or
not anyone fetches its result), a batch for every request in it, a credential for what can be
spent with it. Their answers carry usage only where the provider's do.

Amounts are exact fractions of a dollar, so "at most the budget" is compared exactly.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .upstream import RecordedRequest, ResponseWriter, UpstreamServer

PER_MILLION = Fraction(1, 1_000_000)


@dataclass(frozen=True)
class TokenPrice:
    input: Fraction  # USD per million tokens
    output: Fraction


# What the providers charge (USD), by model family. Dated snapshots bill as their family.
TOKEN_PRICES: dict[str, TokenPrice] = {
    "gpt-4o": TokenPrice(Fraction("2.5"), Fraction(10)),
    "claude-haiku-4-5": TokenPrice(Fraction(1), Fraction(5)),
    "claude-sonnet-4": TokenPrice(Fraction(3), Fraction(15)),
}
SNAPSHOT_OF = {"gpt-4o": "gpt-4o-2024-08-06"}  # what OpenAI's answers name for a family
FAMILY_OF = {"gpt-4o-2024-08-06": "gpt-4o", "claude-haiku-4-5-20251001": "claude-haiku-4-5"}
# OpenAI generates up to the model's own output limit when a request names no cap.
DEFAULT_MAX_OUTPUT = {"gpt-4o": 16_384}
IMAGE_PRICES = {"dall-e-3": Fraction("0.04")}  # per 1024x1024 standard image
SPEECH_PRICES = {"tts-1": Fraction(15)}  # per million characters of `input`
FAL_UNIT_PRICES = {"fal-ai/flux/dev": Fraction("0.025")}  # per billable unit (megapixel)
FAL_JOB_PRICES = {"fal-ai/veo3": Fraction("0.75") * 8}  # per second of video, 8 s
WEB_SEARCH = Fraction(10, 1000)  # Anthropic: $10 per 1,000 searches
SEARCHES_PER_REQUEST = 5  # what the model ran for each request that offered the tool
BATCH_DISCOUNT = Fraction(1, 2)  # batches bill half the token prices
STORED_CONTEXT_TOKENS = 60_000  # what a previous_response_id adds as input
INFERENCE_RUN = Fraction("0.25")  # one inference.sh app run
OPENAI_BATCH_FILE = Fraction(2)  # the requests in the uploaded batch file
# What a browser spends over a Realtime session (a client secret's two hours, or a WebSocket):
# ten minutes of audio in and out.
REALTIME_SESSION = Fraction(3)


def tokens_in(body: dict[str, Any]) -> int:
    """Input tokens the provider counts: about four characters of text a token (never more
    tokens than characters), for the messages, the system prompt or the Responses `input`."""
    parts: list[Any] = [body.get("system"), body.get("input")]
    parts += [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
    text = "".join(p if isinstance(p, str) else json.dumps(p) for p in parts if p is not None)
    return max(1, math.ceil(len(text) / 4))


def family(model: str) -> str:
    return FAMILY_OF.get(model, model)


def token_cost(model: str, input_tokens: int, output_tokens: int) -> Fraction:
    price = TOKEN_PRICES[family(model)]
    return (input_tokens * price.input + output_tokens * price.output) * PER_MILLION


@dataclass(frozen=True)
class Bill:
    case: str
    what: str
    usd: Fraction
    usage: dict[str, int] = field(default_factory=dict)


class Ledger:
    """The providers' bills, each under the case that was running when it was made."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._bills: list[Bill] = []
        self._busy = 0
        self.case = "-"

    def charge(self, what: str, usd: Fraction, usage: dict[str, int] | None = None) -> None:
        with self._cond:
            self._bills.append(Bill(self.case, what, usd, dict(usage or {})))
            self._cond.notify_all()

    def bills(self, case: str | None = None) -> list[Bill]:
        with self._cond:
            return [b for b in self._bills if case is None or b.case == case]

    def total(self, case: str) -> Fraction:
        return sum((b.usd for b in self.bills(case)), Fraction(0))

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around a handler: the case is not over while a provider is still at work."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._busy == 0, timeout):
                raise AssertionError(f"the fake providers are still at work after {timeout} s")

    def wait_for_bills(self, case: str, count: int, timeout: float = 10.0) -> list[Bill]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := [b for b in self._bills if b.case == case]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{case}: {len(found)} bills, expected {count}")
                self._cond.wait(left)
            return found


# Tokens of English text, as a model streams them: most are several bytes long.
STREAM_TOKENS = (" The", " answer", " is", " written", " one", " token", " at", " a", " time", ".")


class Providers:
    """The fake OpenAI, Anthropic, fal and inference.sh, billing into `ledger`.

    `latency`: seconds a non-streamed answer takes to generate; `token_gap`: seconds between the
    tokens of an Anthropic stream (a stopped one bills the tokens made before it saw the stop)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.latency = 0.3
        self.token_gap = 0.05
        self._fal_jobs: dict[str, int] = {}  # request id -> units it billed
        self._lock = threading.Lock()

    def install(self, upstream: UpstreamServer) -> None:
        routes = [
            ("POST", "/v1/chat/completions", self.openai_chat, "api.openai.com"),
            ("POST", "/v1/responses", self.openai_responses, "api.openai.com"),
            ("POST", "/v1/images/generations", self.openai_images, "api.openai.com"),
            ("POST", "/v1/audio/speech", self.openai_speech, "api.openai.com"),
            ("POST", "/v1/batches", self.openai_batch, "api.openai.com"),
            ("POST", "/v1/realtime/client_secrets", self.realtime_secret, "api.openai.com"),
            ("GET", "/v1/realtime", self.realtime_socket, "api.openai.com"),
            ("POST", "/v1/messages", self.anthropic_message, "api.anthropic.com"),
            ("POST", "/v1/messages/batches", self.anthropic_batch, "api.anthropic.com"),
            ("POST", "/fal-ai/", self.fal_submit, "queue.fal.run"),
            ("GET", "/fal-ai/", self.fal_read, "queue.fal.run"),
            ("POST", "/apps/run", self.inference_run, "api.inference.sh"),
        ]
        for method, prefix, handler, host in routes:
            upstream.route(method, prefix, self._billing(handler), host=host)

    def _billing(self, handler: Any) -> Any:
        def handle(req: RecordedRequest, w: ResponseWriter) -> None:
            with self.ledger.busy():
                handler(req, w)

        return handle

    # -- OpenAI -------------------------------------------------------------------------------

    def openai_chat(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        model = body["model"]
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        cap = cap or DEFAULT_MAX_OUTPUT[family(model)]
        output, prompt = cap * (body.get("n") or 1), tokens_in(body)
        answer_model = SNAPSHOT_OF.get(model, model)
        usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": 0}
        if not body.get("stream"):
            w.sleep(self.latency)  # generated, and billed, whether or not anyone is listening
            self._bill_tokens(req, model, prompt, output)
            w.send_json(
                {
                    "id": "chatcmpl-review0001",
                    "object": "chat.completion",
                    "model": answer_model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                    "usage": usage,
                }
            )
            return
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-review0001",
            "object": "chat.completion.chunk",
            "model": answer_model,
        }
        made = 0
        pieces = 4

        def events() -> Iterator[bytes]:
            nonlocal made
            for i in range(pieces):
                made += cap // pieces if i < pieces - 1 else cap - made
                delta = {"content": "Hello"}
                chunk: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta}]}
                if with_usage:
                    chunk["usage"] = None
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            if with_usage:  # OpenAI sends a stream's usage only to a client that asked
                yield b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode()
                yield b"\n\n"
            yield b"data: [DONE]\n\n"

        try:
            w.send_chunks(events(), gap=self.latency / pieces, content_type="text/event-stream")
        finally:
            self._bill_tokens(req, model, prompt, made)

    def openai_responses(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        model = body["model"]
        output = body.get("max_output_tokens") or DEFAULT_MAX_OUTPUT[family(model)]
        prompt = tokens_in(body)
        if body.get("previous_response_id") or body.get("conversation"):
            prompt += STORED_CONTEXT_TOKENS  # the stored context, billed as input
        w.sleep(self.latency)
        self._bill_tokens(req, model, prompt, output)
        usage = {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}
        answer = {"id": "resp_review00000001", "object": "response", "model": model}
        if body.get("background"):  # answered at once; the usage comes with a later poll
            w.send_json({**answer, "status": "queued", "usage": None})
        else:
            w.send_json({**answer, "status": "completed", "usage": usage})

    def openai_images(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        n = body.get("n") or 1
        w.sleep(self.latency)
        self.ledger.charge(f"{req.path} {body['model']} x{n}", n * IMAGE_PRICES[body["model"]])
        images = [{"url": f"https://images.example/{i}.png"} for i in range(n)]
        w.send_json({"created": 1, "data": images})  # no usage: DALL-E answers say none

    def openai_speech(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        text = body["input"]
        w.sleep(self.latency)
        price = SPEECH_PRICES[body["model"]]
        self.ledger.charge(f"{req.path} {len(text)} chars", len(text) * price * PER_MILLION)
        w.send(200, b"ID3" + b"\xff\xfb" * 512, content_type="audio/mpeg")  # says no count

    def openai_batch(self, req: RecordedRequest, w: ResponseWriter) -> None:
        self.ledger.charge(req.path, OPENAI_BATCH_FILE)
        w.send_json({"id": "batch_review0001", "object": "batch", "status": "validating"})

    def realtime_secret(self, req: RecordedRequest, w: ResponseWriter) -> None:
        self.ledger.charge(req.path + " (spent with the secret)", REALTIME_SESSION)
        w.send_json({"value": "ek_review0001", "expires_at": int(time.time()) + 7200})

    def realtime_socket(self, req: RecordedRequest, w: ResponseWriter) -> None:
        self.ledger.charge(req.path + " (a WebSocket session)", REALTIME_SESSION)
        w.send_json({"error": "the fake speaks no WebSocket"}, status=400)

    def _bill_tokens(self, req: RecordedRequest, model: str, prompt: int, output: int) -> None:
        usage = {"input_tokens": prompt, "output_tokens": output}
        self.ledger.charge(f"{req.path} {model}", token_cost(model, prompt, output), usage)

    # -- Anthropic ----------------------------------------------------------------------------

    def anthropic_message(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        if body.get("stream"):
            self._anthropic_stream(req, w, body)
            return
        model, prompt, output = body["model"], tokens_in(body), body["max_tokens"]
        w.sleep(self.latency)
        searches = 0
        for tool in body.get("tools") or []:
            if str(tool.get("type", "")).startswith("web_search"):
                searches = SEARCHES_PER_REQUEST
        self.ledger.charge(
            f"{req.path} {model}",
            token_cost(model, prompt, output) + searches * WEB_SEARCH,
            {"input_tokens": prompt, "output_tokens": output, "web_search_requests": searches},
        )
        usage = {"input_tokens": prompt, "output_tokens": output}
        if searches:
            usage["server_tool_use"] = {"web_search_requests": searches}  # type: ignore[assignment]
        w.send_json(
            {
                "id": "msg_review0001",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "hi"}],
                "usage": usage,
            }
        )

    def _anthropic_stream(
        self, req: RecordedRequest, w: ResponseWriter, body: dict[str, Any]
    ) -> None:
        """One token per event, `token_gap` apart, up to max_tokens. Like Anthropic it bills the
        input and every token it made, also when the client stopped it: a token is made when
        it is written (the one whose write fails counts)."""
        model, prompt = body["model"], tokens_in(body)
        made = 0
        message = {
            "id": "msg_review0002",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }

        def events() -> Iterator[dict[str, Any]]:
            nonlocal made
            yield {"event": "message_start", "data": {"type": "message_start", "message": message}}
            block = {"type": "content_block_start", "index": 0}
            yield {
                "event": "content_block_start",
                "data": {**block, "content_block": {"type": "text", "text": ""}},
            }
            for token in itertools.islice(itertools.cycle(STREAM_TOKENS), body["max_tokens"]):
                made += 1
                delta = {"type": "text_delta", "text": token}
                yield {
                    "event": "content_block_delta",
                    "data": {"type": "content_block_delta", "index": 0, "delta": delta},
                }
            yield {
                "event": "content_block_stop",
                "data": {"type": "content_block_stop", "index": 0},
            }
            final = {"type": "message_delta", "usage": {"output_tokens": made}}
            yield {"event": "message_delta", "data": final}
            yield {"event": "message_stop", "data": {"type": "message_stop"}}

        try:
            w.send_sse(events(), gap=self.token_gap)
        finally:
            usage = {"input_tokens": prompt, "output_tokens": made}
            self.ledger.charge(f"{req.path} {model} stream", token_cost(model, prompt, made), usage)

    def anthropic_batch(self, req: RecordedRequest, w: ResponseWriter) -> None:
        """Each request of the batch runs, billed at half price, to its own max_tokens."""
        total = Fraction(0)
        requests = req.json().get("requests") or []
        for entry in requests:
            params = entry["params"]
            cost = token_cost(params["model"], tokens_in(params), params["max_tokens"])
            total += cost * BATCH_DISCOUNT
        self.ledger.charge(f"{req.path} {len(requests)} requests", total)
        w.send_json({"id": "msgbatch_review0001", "type": "message_batch"})

    # -- fal, inference.sh ------------------------------------------------------------------

    def fal_submit(self, req: RecordedRequest, w: ResponseWriter) -> None:
        """The job runs, and is billed, whether or not its result is ever fetched."""
        app = req.path.strip("/")
        body = req.json()
        request_id = str(uuid.uuid4())
        if app in FAL_JOB_PRICES:
            self.ledger.charge(f"{app} job", FAL_JOB_PRICES[app])
        else:
            units = int(body.get("num_images") or 1)
            with self._lock:
                self._fal_jobs[request_id] = units
            self.ledger.charge(f"{app} job, {units} units", units * FAL_UNIT_PRICES[app])
        base = f"https://queue.fal.run/{app}/requests/{request_id}"
        w.send_json(
            {
                "request_id": request_id,
                "response_url": base,
                "status_url": base + "/status",
                "cancel_url": base + "/cancel",
            },
            headers=[("x-fal-request-id", request_id)],
        )

    def fal_read(self, req: RecordedRequest, w: ResponseWriter) -> None:
        """A status poll, or the result: the result says the units the job billed."""
        parts = req.path.strip("/").split("/")
        if parts[-1] == "status":
            w.send_json({"status": "COMPLETED", "request_id": parts[-2]})
            return
        with self._lock:
            units = self._fal_jobs.get(parts[-1])
        if units is None:
            w.send_json({"detail": "Request not found"}, status=404)
            return
        headers = [("x-fal-billable-units", str(units))]
        w.send_json({"images": [{"url": "https://fal.example/1.png"}]}, headers=headers)

    def inference_run(self, req: RecordedRequest, w: ResponseWriter) -> None:
        self.ledger.charge(req.path, INFERENCE_RUN)
        w.send_json({"success": True, "data": {"id": "tsk_review1", "status": 1}})
