"""@fal-ai/client and @inferencesh/sdk, unmodified, in Node, with keyrelay as their proxy URL
(drivers: fal.mjs, inference.mjs; what they send is described in their headers)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import KeyrelayProcess
from support.repo import RULES
from support.upstream import UpstreamServer

from clients.drivers import run_driver
from clients.provider_fakes import FLUX_RESULT, install_fal, install_inference

QUEUE = "https://queue.fal.run/fal-ai/flux"
INFERENCE = "https://api.inference.sh"


def upstream_calls(upstream: UpstreamServer) -> list[tuple[str, str, str]]:
    return [(r.method, (r.host or "").split(":")[0], r.target) for r in upstream.requests]


def assert_ok(result: dict[str, Any]) -> None:
    failed = {k: v for k, v in result.get("steps", {}).items() if not v.get("ok")}
    assert result["exit"] == 0 and result["ok"], (
        result.get("error"),
        failed,
        result["requests"],
        result["stderr"],
    )


def test_fal_subscribe_stream_upload_cancel(
    node: str,
    keyrelay: KeyrelayProcess,
    upstream: UpstreamServer,
    upload_server: UpstreamServer,
    TEST_KEYS: dict[str, str],
) -> None:
    fal = install_fal(upstream, upload_server.url)
    result = run_driver(
        node,
        "fal.mjs",
        ["subscribe", "stream", "upload", "cancel"],
        {"PROXY_URL": f"{keyrelay.url}/api/fal/proxy", "FAL_POLL_INTERVAL_MS": "100"},
    )
    assert_ok(result)
    steps = result["steps"]

    # subscribe: submit, status polls until COMPLETED (with logs), then the result.
    sub = steps["subscribe"]
    assert sub["statuses"] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert sub["logs_seen"] > 0 and sub["data"] == FLUX_RESULT
    assert sub["request_id"] == next(iter(fal.polls))  # from x-fal-request-id on the result
    rid = sub["request_id"]
    calls = upstream_calls(upstream)
    assert calls[:5] == [
        ("POST", "queue.fal.run", "/fal-ai/flux/dev"),
        ("GET", "queue.fal.run", f"/fal-ai/flux/requests/{rid}/status?logs=1"),
        ("GET", "queue.fal.run", f"/fal-ai/flux/requests/{rid}/status?logs=1"),
        ("GET", "queue.fal.run", f"/fal-ai/flux/requests/{rid}/status?logs=1"),
        ("GET", "queue.fal.run", f"/fal-ai/flux/requests/{rid}"),
    ]

    # The status SSE stream: every event, as it happened (not buffered until the end).
    stream = steps["stream"]
    assert stream["events"] == ["IN_QUEUE", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    assert stream["data"] == FLUX_RESULT
    spread = stream["event_ms"][-1] - stream["event_ms"][0]
    assert spread > 3 * fal.stream_gap * 1000 * 0.5, stream["event_ms"]

    # storage.upload: initiate through keyrelay, bytes straight to the signed URL.
    up = steps["upload"]
    assert up["upload_via_proxy"] is False
    assert up["file_url"].startswith("https://v3.fal.media/files/kangaroo/")
    put = upload_server.only_request()
    assert put.method == "PUT" and hashlib.sha256(put.body).hexdigest() == up["sha256"]
    assert put.header("authorization") is None  # the key never leaves keyrelay
    initiate = next(r for r in upstream.requests if r.path == "/storage/upload/initiate")
    assert initiate.query == "storage_type=fal-cdn-v3"
    assert initiate.json()["content_type"] == "image/png"

    assert ("PUT", "queue.fal.run") in {(m, h) for m, h, _ in upstream_calls(upstream)}
    for r in upstream.requests:
        assert r.header("authorization") == f"Key {TEST_KEYS['FAL_KEY']}"
        assert r.header("x-fal-target-url") is None
    submit = upstream.requests[0]
    assert submit.header("x-fal-queue-priority") == "normal"
    sse = next(r for r in upstream.requests if r.path.endswith("/status/stream"))
    assert sse.header("accept") == "application/json, text/event-stream"


def test_inference_run_follows_the_ndjson_stream(
    node: str,
    keyrelay: KeyrelayProcess,
    upstream: UpstreamServer,
    upload_server: UpstreamServer,
    TEST_KEYS: dict[str, str],
) -> None:
    inf = install_inference(upstream, upload_server.url)
    proxy = f"{keyrelay.url}/api/inference/proxy"
    result = run_driver(node, "inference.mjs", ["run", "poll", "upload"], {"PROXY_URL": proxy})
    assert_ok(result)
    run = result["steps"]["run"]
    assert run["status"] == 10 and run["output"] == {"text": "echo: hello"}
    assert run["updates"][-1] == 10 and 7 in run["updates"]
    assert run["update_ms"][-1] - run["update_ms"][0] > 2 * inf.gap * 1000 * 0.5
    poll = result["steps"]["poll"]
    assert poll["status"] == 10 and poll["output"] == {"text": "echo: hello"}
    up = result["steps"]["upload"]
    assert up["upload_via_proxy"] is False and up["file"]["uri"].endswith("keyrelay-test.png")
    assert hashlib.sha256(upload_server.only_request().body).hexdigest() == up["sha256"]

    task = run["task_id"]
    stream = next(r for r in upstream.requests if r.path == f"/tasks/{task}/stream")
    assert stream.header("accept") == "application/x-ndjson"
    assert stream.query == ""  # keyrelay sends the target's own query, not its __inf_target
    for r in upstream.requests:
        assert r.header("authorization") == f"Bearer {TEST_KEYS['INFERENCE_API_KEY']}"
        assert r.header("x-client-source") is not None
    # The SDK aborts the stream itself at status 10: keyrelay shrugs and serves on.
    assert keyrelay.alive()
    again = run_driver(node, "inference.mjs", ["run"], {"PROXY_URL": proxy})
    assert_ok(again)


def test_with_auth_on_the_owner_follows_its_jobs_and_no_one_else_can(
    node: str,
    keyrelay_factory: Any,
    upstream: UpstreamServer,
    upload_server: UpstreamServer,
) -> None:
    """Ownership (addon/jobs/) with the real clients: each sends the app's session cookie."""
    config = yaml.safe_load(RULES.read_text())
    config["defaults"]["auth"] = {"mode": "tokens", "tokens": {"env": "KR"}, "cookie": "session"}
    tokens = ",".join([token_entry("alice", "alice-session"), token_entry("bob", "bob-session")])
    proxy = keyrelay_factory(yaml.safe_dump(config), env={"KR": tokens})
    alice = {"PROXY_COOKIE": "session=alice-session"}

    install_fal(upstream, upload_server.url)
    fal_proxy = f"{proxy.url}/api/fal/proxy"
    result = run_driver(
        node,
        "fal.mjs",
        ["subscribe", "stream", "cancel"],
        {"PROXY_URL": fal_proxy, "FAL_POLL_INTERVAL_MS": "100", **alice},
    )
    assert_ok(result)
    request_id = result["steps"]["subscribe"]["request_id"]

    install_inference(upstream, upload_server.url)
    inference_proxy = f"{proxy.url}/api/inference/proxy"
    result = run_driver(
        node, "inference.mjs", ["run", "poll"], {"PROXY_URL": inference_proxy, **alice}
    )
    assert_ok(result)
    task_id = result["steps"]["run"]["task_id"]

    upstream.clear_requests()
    with HttpClient(proxy.port) as bob:
        for path, header, target in (
            ("/api/fal/proxy", "x-fal-target-url", f"{QUEUE}/requests/{request_id}/status"),
            ("/api/inference/proxy", "x-inf-target-url", f"{INFERENCE}/tasks/{task_id}"),
        ):
            refused = bob.get(path, headers={header: target, "cookie": "session=bob-session"})
            assert refused.status == 404 and refused.json()["type"].endswith("/unknown-job")
    assert upstream.requests == []
