"""One client session per provider, and the recorder that turns each into tests/flows/NAME.flows.

    scripts/record-fixtures              # from local fake upstreams (no keys, no network)
    scripts/record-fixtures --real       # against the real providers, with keys from the env

Each session is what a client of that provider sends through keyrelay; test_replay.py replays
the saved flows through keyrelay and checks the client sees the same responses. A recording is
written by scripts/record itself, so it holds placeholders (`<OPENAI_API_KEY>`), never keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a script: make `support` importable
    sys.path.insert(0, str(TESTS))

from support.client import HttpClient, Reply  # noqa: E402
from support.proxy import LISTENING_RE, REPO, KeyrelayProcess  # noqa: E402
from support.tls import make_test_ca  # noqa: E402
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer  # noqa: E402

FLOWS = TESTS / "flows"
RECORD = REPO / "scripts" / "record"
REPLAY = REPO / "scripts" / "replay"

Prev = list[Reply]  # the replies so far in this session, for calls that depend on them


@dataclass(frozen=True)
class Fake:
    """What the local fake upstream answers to one call."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    chunks: tuple[bytes, ...] = ()  # when given: a chunked (streamed) body, one wire chunk each
    headers: tuple[tuple[str, str], ...] = ()

    def handler(self, _req: RecordedRequest, w: ResponseWriter) -> None:
        if self.chunks:
            w.send_chunks(
                self.chunks,
                gap=0.02,
                status=self.status,
                headers=self.headers,
                content_type=self.content_type,
            )
        else:
            w.send(self.status, self.body, self.headers, content_type=self.content_type)

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks) if self.chunks else self.body


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str | Callable[[Prev], str]
    fake: Fake
    headers: tuple[tuple[str, str], ...] | Callable[[Prev], tuple[tuple[str, str], ...]] = ()
    json_body: Any = None
    streamed: bool = False  # SSE / NDJSON / chunked audio

    def resolve(self, prev: Prev) -> tuple[str, list[tuple[str, str]]]:
        path = self.path(prev) if callable(self.path) else self.path
        headers = self.headers(prev) if callable(self.headers) else self.headers
        return path, list(headers)


@dataclass(frozen=True)
class Session:
    provider: str
    calls: tuple[Call, ...] = field(default=())

    @property
    def file(self) -> Path:
        return FLOWS / f"{self.provider}.flows"


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _sse(*events: tuple[str | None, Any]) -> tuple[bytes, ...]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    return tuple(out)


CLAUDE = {"model": "claude-3-5-haiku-latest", "max_tokens": 32}
HELLO = [{"role": "user", "content": "Say hello"}]
ANTHROPIC_HEADERS = (("anthropic-version", "2023-06-01"), ("content-type", "application/json"))
OPENAI_HEADERS = (("authorization", "Bearer dummy-key"), ("content-type", "application/json"))
FAL_SUBMIT = "https://queue.fal.run/fal-ai/flux/dev"
FAL_REQUEST = "https://queue.fal.run/fal-ai/flux/requests/6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
AUDIO = bytes(range(256)) * 8  # not UTF-8: must come back byte for byte


def _fal(target: str | Callable[[Prev], str]) -> Callable[[Prev], tuple[tuple[str, str], ...]]:
    def headers(prev: Prev) -> tuple[tuple[str, str], ...]:
        url = target(prev) if callable(target) else target
        return (("x-fal-target-url", url), ("content-type", "application/json"))

    return headers


def _submitted(key: str) -> Callable[[Prev], str]:
    """A URL from fal's submit reply (the first call), so a real recording replays too."""
    return lambda prev: str(prev[0].json()[key])


GEMINI = "/api/gemini/v1beta/models/gemini-2.5-flash"
GEMINI_BODY = {"contents": [{"parts": [{"text": "Say hello"}]}]}
GEMINI_USAGE = {"promptTokenCount": 3, "candidatesTokenCount": 3, "totalTokenCount": 6}


def _gemini(text: str, finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": GEMINI_USAGE,
        "modelVersion": "gemini-2.5-flash",
    }


SESSIONS: tuple[Session, ...] = (
    Session(
        "anthropic",
        (
            Call(
                "message",
                "POST",
                "/api/anthropic/v1/messages",
                Fake(
                    body=_json(
                        {
                            "id": "msg_01",
                            "type": "message",
                            "role": "assistant",
                            "content": [{"type": "text", "text": "Hello!"}],
                            "stop_reason": "end_turn",
                        }
                    )
                ),
                headers=ANTHROPIC_HEADERS,
                json_body={**CLAUDE, "messages": HELLO},
            ),
            Call(
                "message-stream",
                "POST",
                "/api/anthropic/v1/messages",
                Fake(
                    content_type="text/event-stream",
                    chunks=_sse(
                        ("message_start", {"type": "message_start", "message": {"id": "msg_02"}}),
                        (
                            "content_block_delta",
                            {"type": "content_block_delta", "delta": {"text": "Hel"}},
                        ),
                        (
                            "content_block_delta",
                            {"type": "content_block_delta", "delta": {"text": "lo!"}},
                        ),
                        ("message_stop", {"type": "message_stop"}),
                    ),
                    headers=(("cache-control", "no-cache"),),
                ),
                headers=ANTHROPIC_HEADERS,
                json_body={**CLAUDE, "messages": HELLO, "stream": True},
                streamed=True,
            ),
        ),
    ),
    Session(
        "openai",
        (
            Call(
                "chat",
                "POST",
                "/api/openai/chat/completions",
                Fake(
                    body=_json(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
                        }
                    )
                ),
                headers=OPENAI_HEADERS,
                json_body={"model": "gpt-4o-mini", "messages": HELLO},
            ),
            Call(
                "chat-stream",
                "POST",
                "/api/openai/chat/completions",
                Fake(
                    content_type="text/event-stream",
                    chunks=(
                        *_sse(
                            (None, {"choices": [{"delta": {"content": "Hel"}}]}),
                            (None, {"choices": [{"delta": {"content": "lo!"}}]}),
                        ),
                        b"data: [DONE]\n\n",
                    ),
                ),
                headers=OPENAI_HEADERS,
                json_body={"model": "gpt-4o-mini", "messages": HELLO, "stream": True},
                streamed=True,
            ),
        ),
    ),
    Session(
        "elevenlabs",
        (
            Call(
                "speech",
                "POST",
                "/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM",
                Fake(content_type="audio/mpeg", body=AUDIO),
                headers=(("accept", "audio/mpeg"), ("content-type", "application/json")),
                json_body={"text": "Hello", "model_id": "eleven_multilingual_v2"},
            ),
            Call(
                "speech-stream",
                "POST",
                "/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream",
                Fake(
                    content_type="audio/mpeg", chunks=(AUDIO[:700], AUDIO[700:1400], AUDIO[1400:])
                ),
                headers=(("accept", "audio/mpeg"), ("content-type", "application/json")),
                json_body={"text": "Hello", "model_id": "eleven_multilingual_v2"},
                streamed=True,
            ),
        ),
    ),
    Session(
        "fal",
        (
            Call(
                "submit",
                "POST",
                "/api/fal/proxy",
                Fake(
                    body=_json(
                        {
                            "request_id": "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f",
                            "status_url": f"{FAL_REQUEST}/status",
                            "response_url": FAL_REQUEST,
                        }
                    ),
                    headers=(("x-fal-request-id", "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"),),
                ),
                headers=_fal(FAL_SUBMIT),
                json_body={"prompt": "a lighthouse at dusk"},
            ),
            Call(
                "status-queued",
                "GET",
                "/api/fal/proxy",
                Fake(body=_json({"status": "IN_QUEUE", "queue_position": 0})),
                headers=_fal(_submitted("status_url")),
            ),
            Call(
                "status-stream",
                "GET",
                "/api/fal/proxy",
                Fake(
                    content_type="text/event-stream",
                    chunks=_sse(
                        (None, {"status": "IN_PROGRESS", "logs": []}),
                        (None, {"status": "COMPLETED", "logs": []}),
                    ),
                ),
                headers=_fal(lambda prev: str(prev[0].json()["status_url"]) + "/stream"),
                streamed=True,
            ),
            Call(
                "status-done",
                "GET",
                "/api/fal/proxy",
                Fake(body=_json({"status": "COMPLETED"})),
                headers=_fal(_submitted("status_url")),
            ),
            Call(
                "result",
                "GET",
                "/api/fal/proxy",
                Fake(body=_json({"images": [{"url": "https://fal.media/files/cat.png"}]})),
                headers=_fal(_submitted("response_url")),
            ),
        ),
    ),
    Session(
        "inference",
        (
            Call(
                "run",
                "POST",
                "/api/inference/proxy",
                Fake(body=_json({"id": "task-0001", "status": 1})),
                headers=(
                    ("x-inf-target-url", "https://api.inference.sh/apps/run"),
                    ("content-type", "application/json"),
                    ("x-client-source", "keyrelay-tests"),
                ),
                json_body={"app": "infsh/echo", "input": {"text": "hello"}},
            ),
            Call(
                "task-stream",
                "GET",
                lambda prev: (
                    "/api/inference/proxy?__inf_target="
                    + urllib.parse.quote(
                        f"https://api.inference.sh/tasks/{prev[0].json()['id']}/stream", safe=""
                    )
                ),
                Fake(
                    content_type="application/x-ndjson",
                    chunks=(
                        b'{"type":"heartbeat"}\n',
                        b'{"type":"update","status":7,"output":{"text":"hello"}}\n',
                    ),
                ),
                headers=(("accept", "application/x-ndjson"),),
                streamed=True,
            ),
        ),
    ),
    Session(
        "gemini",
        (
            Call(
                "generate",
                "POST",
                f"{GEMINI}:generateContent",
                Fake(body=_json(_gemini("Hello!", "STOP"))),
                headers=(("content-type", "application/json"),),
                json_body=GEMINI_BODY,
            ),
            Call(
                "generate-stream",
                "POST",
                f"{GEMINI}:streamGenerateContent?alt=sse",
                Fake(
                    content_type="text/event-stream",
                    chunks=tuple(
                        b"data: " + _json(e) + b"\r\n\r\n"
                        for e in (_gemini("Hel"), _gemini("lo!", "STOP"))
                    ),
                ),
                headers=(("content-type", "application/json"),),
                json_body=GEMINI_BODY,
                streamed=True,
            ),
        ),
    ),
)


def session(provider: str) -> Session:
    return next(s for s in SESSIONS if s.provider == provider)


def run_calls(client: HttpClient, calls: Sequence[Call], on_call: Callable[[Call], None]) -> Prev:
    """Send a session's calls in order; on_call(call) runs before each (e.g. to set the fake)."""
    replies: Prev = []
    for call in calls:
        on_call(call)
        path, headers = call.resolve(replies)
        body = json.dumps(call.json_body).encode() if call.json_body is not None else None
        # stream() notes chunk arrival; it leaves a Content-Length body unclosed on keep-alive.
        send = client.stream if call.streamed else client.request
        replies.append(send(call.method, path, body, headers))
    return replies


@contextmanager
def fake_upstream(workdir: Path) -> Iterator[tuple[UpstreamServer, Path]]:
    tls = make_test_ca(workdir / "ca")
    with UpstreamServer(tls) as upstream:
        yield upstream, tls.ca_cert


def record(sessions: Sequence[Session], out_dir: Path, *, real: bool = False) -> dict[str, Prev]:
    """Record each session to out_dir/PROVIDER.flows with scripts/record; returns the replies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    replies: dict[str, Prev] = {}
    with tempfile.TemporaryDirectory(prefix="keyrelay-record-") as tmp:
        work = Path(tmp)
        if real:
            for s in sessions:
                replies[s.provider] = _record_real(s, out_dir, work)
            return replies
        with fake_upstream(work) as (upstream, ca):
            for s in sessions:

                def use_fake(call: Call) -> None:
                    upstream.set_default(call.fake.handler)

                proc = KeyrelayProcess(
                    upstream_port=upstream.port,
                    ca_file=ca,
                    workdir=work / s.provider,
                    command=[str(RECORD), str(out_dir / f"{s.provider}.flows")],
                )
                with proc, HttpClient(proc.port, timeout=30) as client:
                    replies[s.provider] = run_calls(client, s.calls, use_fake)
    return replies


def _record_real(s: Session, out_dir: Path, work: Path) -> Prev:
    """Against the real provider: the keys come from this process's environment."""
    log = (work / f"{s.provider}.log").open("wb")
    proc = subprocess.Popen(
        [str(RECORD), str(out_dir / f"{s.provider}.flows"), "--listen-port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port = _wait_port(work / f"{s.provider}.log")
        with HttpClient(port, timeout=120) as client:
            return run_calls(client, s.calls, lambda _call: None)
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_port(log: Path) -> int:
    for _ in range(300):
        if m := LISTENING_RE.search(log.read_text(errors="replace")):
            return int(m["port"])
        time.sleep(0.1)
    raise RuntimeError(f"keyrelay did not start:\n{log.read_text(errors='replace')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("providers", nargs="*", help="only these sessions (default: all)")
    parser.add_argument("--real", action="store_true", help="record the real providers")
    parser.add_argument("--out", type=Path, default=FLOWS, help="directory for NAME.flows")
    args = parser.parse_args(argv)
    chosen = [s for s in SESSIONS if not args.providers or s.provider in args.providers]
    for provider, replies in record(chosen, args.out, real=args.real).items():
        statuses = " ".join(str(r.status) for r in replies)
        print(f"{args.out / (provider + '.flows')}: {len(replies)} calls ({statuses})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
