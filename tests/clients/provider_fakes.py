"""The providers' side of the conformance suite: handlers for the shared fake upstream that
answer the way each provider's API reference says (shapes, SSE/NDJSON sequences, status codes),
so the real client libraries accept them. One `install_*` function per provider.

Bytes the clients upload go straight to an `upload_url`, not through keyrelay: that is a plain
HTTP UpstreamServer here (`install_upload_server`), which answers CORS itself as fal's does.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

FAL_HOSTS = ("queue.fal.run", "fal.run", "rest.fal.ai")
FLUX_RESULT = {
    "images": [
        {
            "url": "https://v3.fal.media/files/rabbit/keyrelay.png",
            "width": 1024,
            "height": 1024,
            "content_type": "image/jpeg",
        }
    ],
    "timings": {"inference": 0.42},
    "seed": 1234,
    "has_nsfw_concepts": [False],
    "prompt": "a red fox in the snow",
}
ANTHROPIC_DELTAS = ("Hello", ", ", "browser", " and", " SDK", "!")
OPENAI_DELTAS = ("Key", "relay", " streams", " tokens", ".")
# Every byte value, in an order no text codec would keep: the audio must arrive byte-identical.
AUDIO = bytes(range(256)) * 64 + b"\xff\xfb\x90\x00ID3\r\n\x00"


def _sequence() -> Callable[[], int]:
    counter = itertools.count(1)
    lock = threading.Lock()

    def next_id() -> int:
        with lock:
            return next(counter)

    return next_id


# -- fal ------------------------------------------------------------------------------------------


@dataclass
class FalFake:
    """fal's queue (submit, status, SSE status stream, result, cancel), fal.run and storage."""

    upload_base: str
    result: dict[str, Any] = field(default_factory=lambda: FLUX_RESULT)  # every app's answer
    polls: dict[str, int] = field(default_factory=dict)
    stream_gap: float = 0.15
    _ids: Callable[[], int] = field(default_factory=_sequence)

    def handle(self, req: RecordedRequest, w: ResponseWriter) -> None:
        host = (req.host or "").split(":")[0]
        path, method = req.path, req.method
        if host == "rest.fal.ai" and path == "/storage/upload/initiate" and method == "POST":
            return self._initiate(req, w)
        if host == "fal.run" and method == "POST":
            return w.send_json(self.result, headers=[("x-fal-request-id", "sync-1")])
        if host == "queue.fal.run":
            if method == "POST":
                return self._submit(req, w)
            if m := re.fullmatch(r"/([^/]+/[^/]+)/requests/([^/]+)(/.*)?", path):
                return self._queue(req, w, m.group(1), m.group(2), m.group(3) or "")
        w.send_json({"detail": f"fake fal: no route for {method} {host}{path}"}, 404)

    def _submit(self, req: RecordedRequest, w: ResponseWriter) -> None:
        request_id = f"5f1c{self._ids():04d}-fa1e-4000-8000-000000000000"  # a UUID, as fal's
        app = "/".join(req.path.strip("/").split("/")[:2])  # owner/alias: no endpoint path
        base = f"https://queue.fal.run/{app}/requests/{request_id}"
        w.send_json(
            {
                "request_id": request_id,
                "status": "IN_QUEUE",
                "queue_position": 0,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
            },
            headers=[("x-fal-request-id", request_id)],
        )

    def _queue(
        self, req: RecordedRequest, w: ResponseWriter, app: str, request_id: str, rest: str
    ) -> None:
        ids = [("x-fal-request-id", request_id)]
        logs = "logs=1" in req.query
        if rest == "/status" and req.method == "GET":
            n = self.polls[request_id] = self.polls.get(request_id, 0) + 1
            return w.send_json(self._status(request_id, min(n, 3), logs), headers=ids)
        if rest == "/status/stream" and req.method == "GET":
            events = [{"data": self._status(request_id, n, logs)} for n in (1, 2, 2, 3)]
            # fal ends the stream after COMPLETED; the client resolves when the body ends.
            return w.send_sse(events, gap=self.stream_gap, headers=ids)
        if rest == "/cancel" and req.method == "PUT":
            return w.send_json({"status": "CANCELLATION_REQUESTED"}, 202)
        if rest == "" and req.method == "GET":
            return w.send_json(self.result, headers=ids)
        w.send_json({"detail": "Not Found"}, 404)

    @staticmethod
    def _status(request_id: str, step: int, logs: bool) -> dict[str, Any]:
        base = f"https://queue.fal.run/fal-ai/flux/requests/{request_id}"
        status = {1: "IN_QUEUE", 2: "IN_PROGRESS", 3: "COMPLETED"}[step]
        body: dict[str, Any] = {
            "status": status,
            "request_id": request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }
        if step == 1:
            body["queue_position"] = 0
        if logs:
            body["logs"] = [
                {"message": f"step {step}", "level": "INFO", "source": "user", "timestamp": "t"}
            ][: step - 1]
        if step == 3:
            body["metrics"] = {"inference_time": 0.42}
        return body

    def _initiate(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        name = f"{self._ids()}-{body['file_name']}"
        w.send_json(
            {
                "upload_url": f"{self.upload_base}/fal-upload/{name}?X-Goog-Signature=fake",
                "file_url": f"https://v3.fal.media/files/kangaroo/{name}",
            }
        )


def install_fal(
    upstream: UpstreamServer, upload_base: str, result: dict[str, Any] = FLUX_RESULT
) -> FalFake:
    fake = FalFake(upload_base, result)
    for host in FAL_HOSTS:
        upstream.route(None, "/", fake.handle, host=host)
    return fake


# -- inference.sh ---------------------------------------------------------------------------------


@dataclass
class InferenceFake:
    """api.inference.sh: /apps/run, the task's NDJSON stream, polling, /files."""

    upload_base: str
    gap: float = 0.15
    linger: float = 1.0  # the real stream stays open after completion; the SDK aborts it
    polls: dict[str, int] = field(default_factory=dict)
    _ids: Callable[[], int] = field(default_factory=_sequence)

    def handle(self, req: RecordedRequest, w: ResponseWriter) -> None:
        path = req.path
        if path == "/apps/run" and req.method == "POST":
            run = req.json()
            task = {"id": f"task_{self._ids():04d}", "status": 1, "app": run["app"]}
            return w.send_json({"data": {**task, "input": run["input"]}, "messages": []})
        if m := re.fullmatch(r"/tasks/([^/]+)/stream", path):
            return self._stream(w, m.group(1))
        if m := re.fullmatch(r"/tasks/([^/]+)/status", path):
            n = self.polls[m.group(1)] = self.polls.get(m.group(1), 0) + 1
            return w.send_json({"data": {"id": m.group(1), "status": 10 if n >= 2 else 7}})
        if m := re.fullmatch(r"/tasks/([^/]+)", path):
            done = self.polls.get(m.group(1), 0) >= 2
            task = {"id": m.group(1), "status": 10 if done else 7}
            if done:
                task["output"] = {"text": "echo: hello"}
            return w.send_json({"data": task})
        if path == "/files" and req.method == "POST":
            files = req.json()["files"]
            return w.send_json({"data": [self._file(f) for f in files]})
        w.send_json({"title": "Not Found", "status": 404, "detail": f"no route {path}"}, 404)

    def _stream(self, w: ResponseWriter, task_id: str) -> None:
        partial = {"status": 7, "output": {"partial": "ec"}}
        done = {"id": task_id, "status": 10, "output": {"text": "echo: hello"}}
        lines: list[Any] = [
            {"type": "heartbeat"},
            {"event": "tasks", "data": {"id": task_id, "status": 7, "logs": []}},
            {"event": "tasks", "data": partial, "fields": ["status", "output"]},
            {"type": "heartbeat"},
            {"event": "tasks", "data": done},
        ]
        head = [("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache")]
        w.send_head(200, head, chunked=True)
        for i, line in enumerate(lines):
            if i:
                w.sleep(self.gap)
            w.write_chunk(json.dumps(line).encode() + b"\n")
        w.sleep(self.linger)
        w.write_chunk(b'{"type":"heartbeat"}\n')
        w.end()

    def _file(self, spec: dict[str, Any]) -> dict[str, Any]:
        n = self._ids()
        return {
            "id": f"file_{n:04d}",
            "uri": f"https://cloud.inference.sh/u/keyrelay/{n}-{spec['filename']}",
            "upload_url": f"{self.upload_base}/inf-upload/{n}?sig=fake",
            "content_type": spec["content_type"],
            "size": spec["size"],
        }


def install_inference(upstream: UpstreamServer, upload_base: str) -> InferenceFake:
    fake = InferenceFake(upload_base)
    upstream.route(None, "/", fake.handle, host="api.inference.sh")
    return fake


# -- uploads (signed URLs, not via keyrelay) ------------------------------------------------------

UPLOAD_CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "PUT, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "content-type"),
]


def install_upload_server(server: UpstreamServer) -> None:
    """A storage bucket: takes PUTs of raw bytes, answers CORS (preflight too) for browsers."""
    server.route("OPTIONS", "/", lambda _r, w: w.send(204, headers=UPLOAD_CORS))
    server.route("PUT", "/", lambda _r, w: w.send_json({}, headers=UPLOAD_CORS))


# -- Anthropic ------------------------------------------------------------------------------------


def anthropic_message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_01KeyrelayFake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }


def anthropic_events(model: str) -> list[dict[str, Any]]:
    start = anthropic_message(model, "")
    start.update(content=[], stop_reason=None, usage={"input_tokens": 12, "output_tokens": 1})

    def ev(name: str, **data: Any) -> dict[str, Any]:
        return {"event": name, "data": {"type": name, **data}}

    return [
        ev("message_start", message=start),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ev("ping"),
        *(
            ev("content_block_delta", index=0, delta={"type": "text_delta", "text": t})
            for t in ANTHROPIC_DELTAS
        ),
        ev("content_block_stop", index=0),
        ev(
            "message_delta",
            delta={"stop_reason": "end_turn", "stop_sequence": None},
            usage={"output_tokens": len(ANTHROPIC_DELTAS)},
        ),
        ev("message_stop"),
    ]


def anthropic_messages(gap: float = 0.05) -> Callable[[RecordedRequest, ResponseWriter], None]:
    def handle(req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        ids = [("request-id", "req_01KeyrelayFake")]
        if body.get("stream"):
            w.send_sse(anthropic_events(body["model"]), gap=gap, headers=ids)
        else:
            w.send_json(anthropic_message(body["model"], "".join(ANTHROPIC_DELTAS)), headers=ids)

    return handle


def anthropic_rate_limited(req: RecordedRequest, w: ResponseWriter) -> None:
    w.send_json(
        {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"},
        },
        429,
        headers=[
            ("request-id", "req_01RateLimited"),
            ("retry-after", "17"),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ],
    )


# -- OpenAI ---------------------------------------------------------------------------------------


def openai_chat_stream(req: RecordedRequest, w: ResponseWriter) -> None:
    body = req.json()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps(
            {
                "id": "chatcmpl-keyrelay",
                "object": "chat.completion.chunk",
                "created": 1735689600,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}) for t in OPENAI_DELTAS]
    events += [chunk({}, "stop"), "[DONE]"]
    w.send_sse(events, gap=0.05, headers=[("x-request-id", "req_openai_fake")])


def openai_image_edit(req: RecordedRequest, w: ResponseWriter) -> None:
    w.send_json(
        {
            "created": 1735689600,
            "data": [{"b64_json": "aGVsbG8gaW1hZ2U=", "revised_prompt": None}],
            "usage": {
                "total_tokens": 100,
                "input_tokens": 50,
                "output_tokens": 50,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            },
        }
    )


# -- ElevenLabs -----------------------------------------------------------------------------------


def elevenlabs_tts(req: RecordedRequest, w: ResponseWriter) -> None:
    pieces = [AUDIO[i : i + 4000] for i in range(0, len(AUDIO), 4000)]
    w.send_chunks(
        pieces,
        content_type="audio/mpeg",
        headers=[("request-id", "el_req_fake"), ("character-cost", "11")],
    )


# -- Gemini ---------------------------------------------------------------------------------------

GEMINI_HOST = "generativelanguage.googleapis.com"
GEMINI_DELTAS = ("Hello", ", key", "relay", "!")
GEMINI_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-image")
GEMINI_THOUGHTS = 21  # thinking tokens each answer bills (as output), never shown
GEMINI_IMAGE_TOKENS = 1290  # what Gemini bills an image it makes, as output
# One transparent pixel, the image the fake makes (and the driver sends).
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class GeminiFake:
    """The Gemini API's generateContent (whole, and streamed as `?alt=sse` events each carrying
    the usage so far), countTokens and the models list (paged) and get. It bills as Gemini does:
    the prompt's tokens (a text's UTF-8 bytes over four, at least one; 258 an inline image),
    the answer's, and the thinking, in each answer's `usageMetadata`."""

    gap: float = 0.15
    billed: list[dict[str, int]] = field(default_factory=list)

    def handle(self, req: RecordedRequest, w: ResponseWriter) -> None:
        found = re.fullmatch(r"/(v1|v1beta)/models(?:/([^/:]+)(?::(\w+))?)?", req.path)
        if found is None:
            return w.send_json(_gemini_error(404, f"no route for {req.path}"), 404)
        _, model, method = found.groups()
        if req.method == "GET" and model is None:
            return self._list(req, w)
        if req.method == "GET" and method is None:
            return w.send_json(_gemini_model(model))
        if req.method != "POST" or method is None:
            return w.send_json(_gemini_error(400, "unsupported"), 400)
        body = req.json()
        if method == "countTokens":
            return w.send_json({"totalTokens": _gemini_prompt(body)})
        if method == "generateContent":
            return w.send_json(self._answer(model, body, GEMINI_DELTAS, final=True))
        if method == "streamGenerateContent" and req.query == "alt=sse":
            events = [
                self._answer(model, body, GEMINI_DELTAS[: i + 1], final=i == len(GEMINI_DELTAS) - 1)
                for i in range(len(GEMINI_DELTAS))
            ]
            # Only the text each event adds; every event carries the usage so far.
            for event, text in zip(events, GEMINI_DELTAS, strict=True):
                event["candidates"][0]["content"]["parts"][0]["text"] = text
            chunks = [b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events]
            return w.send_chunks(chunks, gap=self.gap, content_type="text/event-stream")
        w.send_json(_gemini_error(400, f"unsupported method {method}"), 400)

    def _answer(
        self, model: str, body: dict[str, Any], deltas: tuple[str, ...], *, final: bool
    ) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": "".join(deltas)}]
        output = len(deltas)
        config = body.get("generationConfig") or {}
        if "IMAGE" in config.get("responseModalities", ()):
            parts.append({"inlineData": {"mimeType": "image/png", "data": PIXEL}})
            output += GEMINI_IMAGE_TOKENS
        prompt = _gemini_prompt(body)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "thoughtsTokenCount": GEMINI_THOUGHTS,
            "totalTokenCount": prompt + output + GEMINI_THOUGHTS,
        }
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = "STOP"
            self.billed.append(usage)
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "keyrelay-fake",
        }

    def _list(self, req: RecordedRequest, w: ResponseWriter) -> None:
        query = dict(re.findall(r"([^&=]+)=([^&]*)", req.query))
        start = int(query.get("pageToken") or 0)
        size = int(query.get("pageSize") or 50)
        page = GEMINI_MODELS[start : start + size]
        answer: dict[str, Any] = {"models": [_gemini_model(m) for m in page]}
        if start + size < len(GEMINI_MODELS):
            answer["nextPageToken"] = str(start + size)
        w.send_json(answer)


def _gemini_prompt(body: dict[str, Any]) -> int:
    tokens = 0
    for content in body.get("contents", ()):
        for part in content.get("parts", ()):
            if "text" in part:
                tokens += max(1, len(part["text"].encode()) // 4)
            elif "inlineData" in part:
                tokens += 258
    return tokens


def _gemini_model(model: str) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def _gemini_error(code: int, message: str) -> dict[str, Any]:
    status = "NOT_FOUND" if code == 404 else "INVALID_ARGUMENT"
    return {"error": {"code": code, "message": message, "status": status}}


def install_gemini(upstream: UpstreamServer) -> GeminiFake:
    fake = GeminiFake()
    for version in ("/v1/", "/v1beta/"):
        upstream.route(None, version, fake.handle, host=GEMINI_HOST)
    return fake
