"""End to end: with OTEL_* set, each provider's main call reaches a local OTLP/HTTP receiver as
a GenAI span and as the gen_ai.client metrics, with no key, client credential, prompt or
completion in anything exported; a collector that is down costs the calls nothing; and the
opt-in Server-Timing header leaves the upstream's time out."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support import metered
from support.client import HttpClient
from support.eachlabs import FakeEachLabs
from support.otlp_receiver import OtlpReceiver, Received, Span
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.runware import FakeRunware
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, json_response

PROMPT = "prompt-text-3c9e1f say hi"  # what no exported body may hold
COMPLETION = "completion-text-77ab0d"
CLIENT_TOKEN = "client-credential-5d1e"
SECRETS = [*TEST_KEYS.values(), *TEST_KEYS["FAL_KEY"].split(":"), CLIENT_TOKEN]
GEMINI_HOST = "generativelanguage.googleapis.com"
UPSTREAM_SLEEP = 1.0  # seconds the slow upstream takes before it answers

RULES = """
providers:
  anthropic:
    profile: anthropic
    prices: [{model: "*", input: 3.0, output: 15.0, cache_read: 0.3, cache_write: 3.75}]
  openai:
    profile: openai
    prices: [{model: "gpt-4o*", input: 2.5, output: 10.0}]
  gemini:
    profile: gemini
    prices: [{model: "gemini-*", input: 0.3, output: 2.5}]
  elevenlabs:
    profile: elevenlabs
    prices: [{model: "*", characters: 300.0}]
  fal:
    profile: fal
    prices: [{endpoint: "fal-ai/flux/*", unit: 0.025, reserve: 4}]
"""


def gemini(req: RecordedRequest, w: ResponseWriter) -> None:
    w.send_json(
        {
            "candidates": [{"content": {"parts": [{"text": COMPLETION}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 11,
                "candidatesTokenCount": 5,
                "totalTokenCount": 16,
            },
            "modelVersion": "gemini-2.5-flash-001",
        }
    )


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def otel_env(endpoint: str) -> dict[str, str | None]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "keyrelay-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: the test need not wait 5 s for a batch
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 32, **extra}


def calls(proc: KeyrelayProcess) -> None:
    """Each profile's main call, one streamed, and one refused."""
    bearer = {"authorization": f"Bearer {CLIENT_TOKEN}"}  # dropped before the upstream
    with HttpClient(proc.port) as c:
        for reply in (
            c.post("/api/anthropic/v1/messages", json=chat(PROMPT, model="claude-sonnet-4-5")),
            c.post(
                "/api/anthropic/v1/messages",
                json=chat(PROMPT + " cached", model="claude-haiku-4-5", stream=True),
            ),
            c.post(
                "/api/openai/chat/completions",
                json=chat(PROMPT, model="gpt-4o-mini"),
                headers=bearer,
            ),
            c.post(
                "/api/openai/responses",
                json={"model": "gpt-4o", "input": PROMPT, "max_output_tokens": 40},
                headers=bearer,
            ),
            c.post(
                "/api/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
            ),
            c.post(
                "/api/elevenlabs/v1/text-to-speech/voice1",
                json={"text": PROMPT, "model_id": "eleven_multilingual_v2"},
            ),
        ):
            assert reply.status == 200, reply.body
        fal = {"x-fal-target-url": "https://queue.fal.run/fal-ai/flux/dev"}
        submitted = c.post("/api/fal/proxy", json={"prompt": PROMPT, "num_images": 3}, headers=fal)
        assert submitted.status == 200, submitted.body
        request_id = submitted.json()["request_id"]
        result_url = f"https://queue.fal.run/fal-ai/flux/dev/requests/{request_id}"
        result = c.get("/api/fal/proxy", headers={"x-fal-target-url": result_url})
        assert result.status == 200, result.body
        refused = c.get("/api/anthropic/v1/messages/batches")  # not a browser's call
        assert refused.status == 403


def one(spans: list[Span], operation: str, **wanted: Any) -> Span:
    found = [
        s
        for s in spans
        if s.attributes.get("gen_ai.operation.name") == operation
        and all(s.attributes.get(k) == v for k, v in wanted.items())
    ]
    assert len(found) == 1, [(s.name, s.attributes) for s in spans]
    return found[0]


def test_each_providers_call_is_a_genai_span_and_metrics(
    keyrelay_factory: Any, upstream: UpstreamServer, receiver: OtlpReceiver
) -> None:
    metered.install(upstream)
    upstream.route("POST", "/v1beta/models/", gemini, host=GEMINI_HOST)
    proc = keyrelay_factory(RULES, env=otel_env(receiver.endpoint))
    calls(proc)

    got = receiver.wait_for(lambda r: len(r.spans) >= 9)
    spans = got.spans
    assert {s.resource.get("service.name") for s in spans} == {"keyrelay-e2e"}
    assert all(s.kind == 3 for s in spans)  # SPAN_KIND_CLIENT

    claude = one(spans, "chat", **{"gen_ai.request.model": "claude-sonnet-4-5"})
    body = chat(PROMPT)
    usage = metered.expected(body)
    assert claude.name == "chat claude-sonnet-4-5"
    assert claude.attributes["gen_ai.provider.name"] == "anthropic"
    assert claude.attributes["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert claude.attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
    assert claude.attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert claude.attributes["keyrelay.decision"] == "forwarded"
    assert claude.attributes["keyrelay.cost_usd"] > 0
    assert claude.end_ns > claude.start_ns
    assert claude.status_code != 2  # not STATUS_CODE_ERROR

    streamed = one(spans, "chat", **{"gen_ai.request.model": "claude-haiku-4-5"})
    cached = metered.expected(chat(PROMPT + " cached"))
    assert streamed.attributes["gen_ai.usage.cache_read.input_tokens"] == metered.CACHED
    assert streamed.attributes["gen_ai.usage.input_tokens"] == (
        cached["input_tokens"] + metered.CACHED  # the conventions count the cached ones in
    )
    assert 0 < streamed.attributes["gen_ai.response.time_to_first_chunk"] < 30

    for model in ("gpt-4o-mini", "gpt-4o"):
        call = one(spans, "chat", **{"gen_ai.request.model": model})
        assert call.attributes["gen_ai.provider.name"] == "openai"
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
        assert call.attributes["keyrelay.cost_usd"] > 0

    gem = one(spans, "generate_content")
    assert gem.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert gem.attributes["gen_ai.request.model"] == "gemini-2.5-flash"
    assert gem.attributes["gen_ai.response.model"] == "gemini-2.5-flash-001"
    assert gem.attributes["gen_ai.usage.input_tokens"] == 11
    assert gem.attributes["gen_ai.usage.output_tokens"] == 5

    tts = one(spans, "tts")
    assert tts.attributes["gen_ai.provider.name"] == "elevenlabs"
    assert tts.attributes["keyrelay.usage.characters"] == len(PROMPT)
    assert tts.attributes["keyrelay.cost_usd"] > 0

    submit = one(spans, "queue.submit")
    assert submit.attributes["gen_ai.provider.name"] == "fal"
    assert submit.attributes["http.response.status_code"] == 200
    result = one(spans, "queue.result")
    assert result.attributes["keyrelay.usage.units"] == 3
    assert result.attributes["keyrelay.cost_usd"] == pytest.approx(0.075)

    refused = one(spans, "request", **{"keyrelay.decision": "refused"})
    assert refused.attributes["keyrelay.refusal"] == "operation-not-allowed"
    assert refused.attributes["error.type"] == "operation-not-allowed"
    assert refused.attributes["http.response.status_code"] == 403
    assert refused.status_code == 2  # STATUS_CODE_ERROR

    def measured(r: Received) -> bool:
        names = {p.metric for p in r.points}
        types = {p.attributes.get("gen_ai.token.type") for p in r.points}
        return {
            "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
        } <= names and {"input", "output"} <= types

    got = receiver.wait_for(measured)
    tokens = [p for p in got.points if p.metric == "gen_ai.client.token.usage"]
    assert {p.unit for p in tokens} == {"{token}"}
    claude_in = [
        p
        for p in tokens
        if p.attributes.get("gen_ai.request.model") == "claude-sonnet-4-5"
        and p.attributes["gen_ai.token.type"] == "input"
    ]
    assert claude_in and claude_in[-1].sum == usage["input_tokens"]
    durations = [p for p in got.points if p.metric == "gen_ai.client.operation.duration"]
    assert {p.unit for p in durations} == {"s"}
    assert max(p.count for p in durations) >= 1
    assert not any("keyrelay.identity" in p.attributes for p in got.points)

    proc.stop()  # the last batch goes out at exit
    for label, blob in enumerate(receiver.received.bodies):
        for secret in [*SECRETS, PROMPT, COMPLETION, "say hi"]:
            assert secret.encode() not in blob, f"{secret!r} in exported body {label}"


def test_a_collector_that_is_down_costs_the_calls_nothing(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    metered.install(upstream)
    proc = keyrelay_factory(RULES, env=otel_env(f"http://127.0.0.1:{closed}"))
    with HttpClient(proc.port) as c:
        for _ in range(3):
            reply = c.post(
                "/api/anthropic/v1/messages", json=chat(PROMPT, model="claude-haiku-4-5")
            )
            assert reply.status == 200
    proc.wait_for_output(r"OpenTelemetry: exporting traces and metrics", timeout=5)
    assert proc.stop() == 0  # the exit is not held by exports that cannot go out


# -- Server-Timing --------------------------------------------------------------------------

TIMING = re.compile(r"^keyrelay;dur=(\d+(?:\.\d+)?)$")


def slow_json(_req: RecordedRequest, w: ResponseWriter) -> None:
    w.sleep(UPSTREAM_SLEEP)
    w.send_json({"id": "msg_1", "model": "claude-haiku-4-5", "content": []})


def slow_stream(_req: RecordedRequest, w: ResponseWriter) -> None:
    w.sleep(UPSTREAM_SLEEP)  # before the head: the upstream's time to answer
    w.send_sse([json.dumps({"choices": []}), "[DONE]"])


def dur_ms(reply: Any) -> float:
    value = reply.header("server-timing")
    assert value is not None, reply.headers
    found = TIMING.match(value)
    assert found, value
    return float(found[1])


def test_server_timing_is_keyrelays_time_without_the_upstreams(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", slow_json, host="api.anthropic.com")
    upstream.route("POST", "/v1/chat/completions", slow_stream, host="api.openai.com")
    proc = keyrelay_factory(extra_args=["--set", "keyrelay_server_timing=true"])
    with HttpClient(proc.port) as c:
        buffered = c.post("/api/anthropic/v1/messages", json=chat("hi", model="claude-haiku-4-5"))
        assert buffered.status == 200
        streamed = c.stream(
            "POST", "/api/openai/chat/completions", json=chat("hi", model="gpt-4o", stream=True)
        )
        assert streamed.status == 200
        refused = c.get("/api/anthropic/v1/messages/batches")
        assert refused.status == 403
    # What is measured: keyrelay's part, not the second the upstream took to answer.
    assert 0 <= dur_ms(buffered) < UPSTREAM_SLEEP * 1000
    assert 0 <= dur_ms(streamed) < UPSTREAM_SLEEP * 1000
    assert dur_ms(refused) >= 0  # keyrelay's own answer: all of it keyrelay's


def test_server_timing_is_off_by_default(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", metered.anthropic, host="api.anthropic.com")
    with HttpClient(keyrelay.port) as c:
        reply = c.post("/api/anthropic/v1/messages", json=chat("hi", model="claude-haiku-4-5"))
    assert reply.status == 200
    assert reply.header("server-timing") is None


def test_what_is_queued_goes_out_at_exit(
    keyrelay_factory: Any, upstream: UpstreamServer, receiver: OtlpReceiver
) -> None:
    metered.install(upstream)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}  # 5 s batches, 60 s metric reads
    proc = keyrelay_factory(RULES, env=env)
    with HttpClient(proc.port) as c:
        reply = c.post("/api/anthropic/v1/messages", json=chat(PROMPT, model="claude-haiku-4-5"))
        assert reply.status == 200
    assert proc.stop() == 0
    got = receiver.wait_for(lambda r: bool(r.spans) and bool(r.points), timeout=1)
    assert [s.name for s in got.spans] == ["chat claude-haiku-4-5"]
    assert "gen_ai.client.operation.duration" in {p.metric for p in got.points}


OTHER_RULES = """
providers:
  eachlabs:
    profile: eachlabs
    prices: [{model: "nano-banana-pro", prediction: 0.30}]
  runware:
    profile: runware
    prices: [{model: "bfl:*", unit: 0.08}]
  inference:
    profile: inference
"""


def test_the_other_providers_calls_are_genai_spans_too(
    keyrelay_factory: Any, upstream: UpstreamServer, receiver: OtlpReceiver
) -> None:
    """EachLabs, Runware and inference.sh: a span each, named by its profile's operation."""
    FakeEachLabs().install(upstream)
    runware = FakeRunware(polls_before_done=0).install(upstream)
    task = {"data": {"id": "task_1", "status": "queued"}}
    upstream.route("POST", "/apps/run", json_response(task), host="api.inference.sh")
    proc = keyrelay_factory(OTHER_RULES, env=otel_env(receiver.endpoint))
    submit = {
        "taskType": "imageInference",
        "taskUUID": "6c7f9a3e-2b1d-4e5f-8a9b-0c1d2e3f4a5b",
        "model": "bfl:2@1",
        "positivePrompt": PROMPT,
        "width": 1024,
        "height": 1024,
    }
    with HttpClient(proc.port) as c:
        for reply in (
            c.post(
                "/api/eachlabs/v1/prediction",
                json={"model": "nano-banana-pro", "version": "0.0.1", "input": {"prompt": PROMPT}},
            ),
            c.post("/api/runware", json=[submit]),
            c.post(
                "/api/inference/proxy",
                json={"app": "infsh/flux", "input": {"prompt": PROMPT}},
                headers={"x-inf-target-url": "https://api.inference.sh/apps/run"},
            ),
        ):
            assert reply.status == 200, reply.body

    spans = receiver.wait_for(lambda r: len(r.spans) >= 3).spans
    prediction = one(spans, "predictions.create")
    assert prediction.attributes["gen_ai.provider.name"] == "eachlabs"
    assert prediction.attributes["keyrelay.cost_usd"] == pytest.approx(0.30)
    tasks = one(spans, "tasks", **{"gen_ai.provider.name": "runware"})
    assert tasks.attributes["keyrelay.cost_usd"] == pytest.approx(sum(runware.billed.values()))
    run = one(spans, "apps.run")
    assert run.attributes["gen_ai.provider.name"] == "inference"
    assert all(s.attributes["keyrelay.decision"] == "forwarded" for s in spans)
    proc.stop()
    for blob in receiver.received.bodies:
        for secret in [*SECRETS, PROMPT]:
            assert secret.encode() not in blob
