"""@google/genai, unmodified, in Node, with keyrelay as its base URL (driver: gemini.mjs), against
a fake Gemini that bills in its answers: the key keyrelay holds goes upstream, never the client's;
what each call used and cost shows in the access log; a budget reserves what Gemini may make."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from support.client import HttpClient
from support.proxy import KeyrelayProcess
from support.repo import RULES
from support.upstream import UpstreamServer

from clients.drivers import run_driver
from clients.provider_fakes import (
    GEMINI_DELTAS,
    GEMINI_HOST,
    GEMINI_MODELS,
    GEMINI_THOUGHTS,
    PIXEL,
    install_gemini,
)
from clients.test_node_clients import assert_ok

CLIENT_KEY = "AIzaSy-client-side-dummy-0042"  # what the app gives the SDK; never sent upstream
MODEL = "gemini-2.5-flash"
INPUT, OUTPUT = 0.30, 2.50  # USD per million tokens, as rules.yaml's example prices flash
GENERATE = f"/v1/models/{MODEL}:generateContent"


def start(factory: Any, tmp_path: Path, **budgets: Any) -> tuple[KeyrelayProcess, Path]:
    """keyrelay with prices for Gemini (and `budgets`), its access log in JSON to a file."""
    config = yaml.safe_load(RULES.read_text())
    gemini = config["providers"]["gemini"]
    gemini["prices"] = [{"model": "gemini-2.5-*", "input": INPUT, "output": OUTPUT}]
    if "provider" in budgets:
        gemini["budget"] = budgets["provider"]
    if "top" in budgets:
        config["budget"] = budgets["top"]
    log = tmp_path / "access.log"
    proc = factory(
        yaml.safe_dump(config),
        extra_args=[
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
        ],
    )
    return proc, log


def access_lines(log: Path, count: int) -> list[dict[str, Any]]:
    """The access log once it has `count` lines (each is written as its flow ends, which may
    be a moment after the client got its answer)."""
    deadline = time.monotonic() + 10
    while True:
        text = log.read_text() if log.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{count} access log lines expected:\n{text}"
        time.sleep(0.05)


def cost(usage: dict[str, int]) -> float:
    prompt, thoughts = usage["promptTokenCount"], usage["thoughtsTokenCount"]
    output = usage["candidatesTokenCount"] + thoughts
    return round((prompt * INPUT + output * OUTPUT) / 1e6, 9)


def drive(proc: KeyrelayProcess, node: str, steps: list[str]) -> dict[str, Any]:
    env = {"PROXY_URL": f"{proc.url}/api/gemini", "GEMINI_CLIENT_CREDENTIAL": CLIENT_KEY}
    result = run_driver(node, "gemini.mjs", steps, env)
    assert_ok(result)
    return result


def test_generate_stream_image_count_and_models_through_keyrelay(
    node: str,
    keyrelay_factory: Any,
    upstream: UpstreamServer,
    tmp_path: Path,
    TEST_KEYS: dict[str, str],
) -> None:
    fake = install_gemini(upstream)
    proc, log = start(keyrelay_factory, tmp_path)
    result = drive(proc, node, ["generate", "stream", "image", "count", "models"])
    steps = result["steps"]
    text = "".join(GEMINI_DELTAS)
    assert steps["generate"]["text"] == text
    assert steps["generate"]["usage"]["thoughtsTokenCount"] == GEMINI_THOUGHTS
    # Streamed as it came: each event on its own, not the whole answer at the end.
    stream = steps["stream"]
    assert stream["texts"] == list(GEMINI_DELTAS)
    spread = stream["arrived_ms"][-1] - stream["arrived_ms"][0]
    assert spread > (len(GEMINI_DELTAS) - 1) * fake.gap * 1000 * 0.5, stream["arrived_ms"]
    assert steps["image"]["data"] == PIXEL and steps["image"]["mime_type"] == "image/png"
    assert steps["count"]["total_tokens"] == 5
    assert steps["models"]["names"] == [f"models/{m}" for m in GEMINI_MODELS]  # two pages
    assert steps["models"]["got"] == f"models/{MODEL}"

    # What the SDK sent (its API version, the key it holds), and what Gemini got.
    assert {r["target"] for r in result["requests"]} == {CLIENT_KEY}
    targets = [r.target for r in upstream.requests]
    assert targets == [
        GENERATE,
        f"/v1/models/{MODEL}:streamGenerateContent?alt=sse",
        GENERATE,
        f"/v1/models/{MODEL}:countTokens",
        "/v1/models?pageSize=2",
        "/v1/models?pageSize=2&pageToken=2",
        f"/v1/models/{MODEL}",
    ]
    for got in upstream.requests:
        assert got.host == GEMINI_HOST
        assert got.header_all("x-goog-api-key") == [TEST_KEYS["GEMINI_API_KEY"]]
        assert CLIENT_KEY.encode() not in got.raw_head + got.body
    assert upstream.requests[2].json()["contents"][0]["parts"][1]["inlineData"]["data"] == PIXEL

    # Each generation's usage, in keyrelay's terms (thinking as output), and its cost.
    lines = access_lines(log, len(targets))
    by_path = [(line["path"], line) for line in lines]
    generations = [line for path, line in by_path if ":generateContent" in path or "stream" in path]
    assert len(generations) == 3 and len(fake.billed) == 3
    for line, billed in zip(generations, fake.billed, strict=True):
        assert line["status"] == 200 and line["model"] == MODEL
        assert line["usage"] == {
            "input_tokens": billed["promptTokenCount"],
            "output_tokens": billed["candidatesTokenCount"] + GEMINI_THOUGHTS,
        }
        assert line["cost"] == cost(billed)
    for path, line in by_path:
        if ":countTokens" in path or path.endswith("/models") or path.endswith(MODEL):
            assert line["status"] == 200 and not line.get("cost")
    assert CLIENT_KEY not in log.read_text() + proc.output()


def test_a_budget_reserves_what_gemini_may_make_when_the_request_names_no_cap(
    node: str, keyrelay_factory: Any, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """Without generationConfig.maxOutputTokens a model may make 65,536 output tokens: $0.16
    at flash's price, more than this provider's $0.15 a day. With a cap it fits, and the SDK's
    calls are charged what Gemini billed."""
    fake = install_gemini(upstream)
    proc, log = start(keyrelay_factory, tmp_path, top={"daily": 1.0}, provider={"daily": 0.15})
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello to keyrelay."}]}]}
    with HttpClient(proc.port) as client:
        refused = client.post(f"/api/gemini{GENERATE}", json=body)
        assert refused.status == 403, refused.body
        assert refused.json()["type"].endswith("/request-exceeds-budget")
        assert upstream.requests == []
    drive(proc, node, ["generate", "stream", "count"])
    assert len(fake.billed) == 2
    lines = access_lines(log, 4)
    charged = [line["cost"] for line in lines if line.get("cost")]
    assert charged == [cost(billed) for billed in fake.billed]
