"""End to end: no key or client credential survives in saved flows, HAR, logs or mitmweb;
flows carry a summary; the metrics endpoint serves Prometheus text; a fresh recording replays."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from mitmproxy import http, io
from prometheus_client.parser import text_string_to_metric_families
from support.client import HttpClient, raw_exchange
from support.proxy import MITM_SCRIPT, TEST_KEYS, KeyrelayProcess
from support.recorded_sessions import RECORD, run_calls, session
from support.tls import PROVIDER_HOSTS
from support.transport import h2_request
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

CLIENT_TOKEN = "client-credential-7Qx9"  # the client's own credential, as sent to keyrelay
COOKIE = "cookie-secret-55aa"
ALL_SECRETS = [*TEST_KEYS.values(), *TEST_KEYS["FAL_KEY"].split(":"), CLIENT_TOKEN, COOKIE]


def echo_the_key(req: RecordedRequest, w: ResponseWriter) -> None:
    """An upstream that quotes the credential it got, in a header and in the error body."""
    key = req.header("authorization") or req.header("x-api-key") or ""
    w.send_json({"error": f"Incorrect API key provided: {key}"}, 401, [("x-echo", key)])


def hang(_req: RecordedRequest, w: ResponseWriter) -> None:
    w.sleep(30)  # ends early when the upstream stops


def slow_sse(_req: RecordedRequest, w: ResponseWriter) -> None:
    w.send_sse(["one", "two", "three"], gap=1.0)


def assert_no_secret(label: str, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for secret in ALL_SECRETS:
        assert secret.encode() not in blob, f"{secret!r} found in {label}"


def exercise(proc: KeyrelayProcess, upstream: UpstreamServer) -> None:
    """Success, echoed keys, a refusal, a client abort, and a request still open at shutdown."""
    upstream.route("POST", "/v1/chat/completions", echo_the_key)
    upstream.route("POST", "/v1/messages", slow_sse)
    upstream.route("POST", "/v1/text-to-speech", hang)
    creds = {"authorization": f"Bearer {CLIENT_TOKEN}", "cookie": f"sid={COOKIE}"}
    with HttpClient(proc.port) as client:
        echoed = client.post("/api/openai/chat/completions", json={"m": 1}, headers=creds)
        assert echoed.status == 401
        assert_no_secret("the client's copy of an echoed key", echoed.body)
        assert "<OPENAI_API_KEY>" in echoed.body.decode()
        fal = client.request(
            "POST",
            "/api/fal/proxy",
            b"{}",
            headers={"x-fal-target-url": "https://fal.run/fal-ai/flux/dev", **creds},
        )
        assert fal.status == 200
        refused = client.get("/api/nowhere?token=abc", headers=creds)
        assert refused.status == 404
    abort_mid_response(proc.port, "/api/anthropic/v1/messages")
    with socket.create_connection(("127.0.0.1", proc.port)) as hanging:
        hanging.sendall(raw_post("/api/elevenlabs/v1/text-to-speech/v1"))
        upstream.wait_for_requests(4, timeout=10)
        proc.wait_for_output(r"client disconnect|error", timeout=10)
        proc.stop()  # the text-to-speech flow is still live: `done` must mask it


def raw_post(path: str) -> bytes:
    body = b'{"text": "hi"}'
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def abort_mid_response(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(raw_post(path))
        s.settimeout(5)
        # Streamed: the head arrives, then we go away mid-stream. Buffered: before the response.
        with contextlib.suppress(TimeoutError):
            s.recv(1)


def saved_flows(file: Path) -> list[http.HTTPFlow]:
    with file.open("rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]


def test_saved_flows_har_and_logs_hold_no_secret(
    keyrelay_factory: object, upstream: UpstreamServer, tmp_path: Path
) -> None:
    flows_file, har, log = tmp_path / "out.flows", tmp_path / "out.har", tmp_path / "access.log"
    proc: KeyrelayProcess = keyrelay_factory(  # type: ignore[operator]
        env={"FAL_KEY": TEST_KEYS["FAL_KEY"]},
        command=[str(RECORD), str(flows_file)],
        extra_args=[
            "--set",
            f"hardump={har}",
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
            "--set",
            "keyrelay_drain_timeout=0",  # a stream is left open: shutdown saves it as it stands
        ],
    )
    exercise(proc, upstream)
    assert f"scripts/record: recording every flow to {flows_file.resolve()}" in proc.output()

    assert_no_secret("the -w file", flows_file.read_bytes())
    assert_no_secret("the HAR export", har.read_bytes())
    assert_no_secret("the access log", log.read_text())
    assert_no_secret("keyrelay's output", proc.output())

    flows = saved_flows(flows_file)
    by_path = {f.request.path.partition("?")[0]: f for f in flows}
    echoed = by_path["/v1/chat/completions"]
    assert echoed.request.headers["authorization"] == "Bearer <OPENAI_API_KEY>"
    assert echoed.response and echoed.response.headers["x-echo"] == "Bearer <OPENAI_API_KEY>"
    assert "provider: openai" in echoed.comment and "rule: prefix /api/openai" in echoed.comment
    refused = by_path["/api/nowhere"]
    assert refused.marked and refused.comment.startswith("refused: no-route | ")
    assert refused.request.headers["authorization"].startswith("<client authorization sha256:")
    assert "<FAL_KEY>" in by_path["/fal-ai/flux/dev"].request.headers["authorization"]
    live = by_path["/v1/text-to-speech/v1"]  # still open at shutdown
    assert live.request.headers["xi-api-key"] == "<ELEVENLABS_API_KEY>"
    assert "/v1/messages" in by_path  # the aborted one
    assert json.loads(har.read_text())["log"]["entries"]

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"time", "identity", "method", "path", "bytes_in", "bytes_out"} <= set(lines[0])
    refusal = next(e for e in lines if e.get("refusal"))
    assert refusal["refusal"] == "no-route" and refusal["path"] == "/api/nowhere"
    assert all("token=" not in e["path"] for e in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_get(port: int, path: str, password: str) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {password}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def test_mitmweb_shows_no_secret_once_flows_complete(
    keyrelay_factory: object, upstream: UpstreamServer
) -> None:
    web_port, password = free_port(), "web-pass-1234"
    proc: KeyrelayProcess = keyrelay_factory(  # type: ignore[operator]
        command=[str(MITM_SCRIPT), "mitmweb"],
        extra_args=[
            "--set",
            f"web_port={web_port}",
            "--set",
            f"web_password={password}",
            "--set",
            "web_open_browser=false",
            "--set",
            "keyrelay_fast_dispatch=true",
        ],
    )
    upstream.route("POST", "/v1/chat/completions", echo_the_key)
    creds = {"authorization": f"Bearer {CLIENT_TOKEN}"}
    with HttpClient(proc.port) as client:
        assert client.post("/api/openai/chat/completions", json={}, headers=creds).status == 401
        assert client.get("/api/nowhere", headers=creds).status == 404
    proc.wait_for_output(r"reason=no-route")
    flows = json.loads(web_get(web_port, "/flows", password))
    assert len(flows) >= 2
    assert_no_secret("mitmweb /flows", json.dumps(flows))
    for flow in flows:
        for message in ("request", "response"):
            content = web_get(web_port, f"/flows/{flow['id']}/{message}/content.data", password)
            assert_no_secret(f"mitmweb {message} content", content)
    assert_no_secret("mitmweb /flows/dump", web_get(web_port, "/flows/dump", password))
    assert any(f["comment"].startswith("refused: ") and f["marked"] for f in flows)
    # mitmweb's hooks (its flow view among them) ran through keyrelay's dispatch table.
    assert "keyrelay: fast hook dispatch on" in proc.output()


def test_metrics_endpoint_over_http(keyrelay: KeyrelayProcess, client: HttpClient) -> None:
    client.get("/api/nowhere")
    reply = client.get("/_keyrelay/metrics")
    assert reply.status == 200
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    refusals = {
        s.labels["reason"]: s.value
        for s in families["keyrelay_refusals"].samples
        if s.name.endswith("_total")
    }
    assert refusals.get("no-route", 0) >= 1
    health = client.get("/_keyrelay/health").json()
    assert health["status"] == "ok" and health["providers"]["openai"] == {"configured": True}
    assert_no_secret("health", json.dumps(health))


def _contents(flows: Iterable[http.HTTPFlow]) -> list[bytes | None]:
    return [f.response.raw_content for f in flows if f.response]


def test_a_fresh_recording_holds_what_the_client_saw(
    keyrelay_factory: object, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """scripts/record from the fake upstream: streamed bodies stored, no key in the bytes."""
    s = session("anthropic")
    file = tmp_path / "anthropic.flows"
    proc: KeyrelayProcess = keyrelay_factory(command=[str(RECORD), str(file)])  # type: ignore[operator]
    with HttpClient(proc.port) as client:
        replies = run_calls(client, s.calls, lambda call: upstream.set_default(call.fake.handler))
    proc.stop()
    assert_no_secret("a fresh recording", file.read_bytes())
    forwarded = [f for f in saved_flows(file) if f.metadata["keyrelay"].get("provider")]
    assert _contents(forwarded) == [r.body for r in replies] == [c.fake.content for c in s.calls]


@pytest.fixture(autouse=True)
def _no_real_keys_in_fixtures() -> None:
    assert all(k.startswith("test-") for k in TEST_KEYS.values())


def test_control_characters_a_client_sends_never_reach_the_text_log_raw(
    keyrelay_factory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = keyrelay_factory(extra_args=["--set", f"keyrelay_access_log_file={log}"])
    over_http1 = b"/api/openai/\x1b[2J\x1b[31mred\xc2\x85"  # VT, FF and spaces end a request line
    reply = raw_exchange(
        proxy.port, b"GET " + over_http1 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", until=b"}"
    )
    assert reply.startswith(b"HTTP/1.1 ")
    over_http2 = "/api/anthropic/v1/x 200 in=0 out=0 dur=1ms ttfb=- forwarded\x0b\x0c\x1b[0m"
    h2_request(proxy.port, proxy.confdir / "mitmproxy-ca-cert.pem", over_http2, [])
    deadline = time.monotonic() + 5
    while (text := log.read_text() if log.exists() else "").count("/api/") < 2:
        assert time.monotonic() < deadline, f"no access log lines: {text!r}"
        time.sleep(0.05)
    lines = [line for line in text.splitlines(keepends=True) if "/api/" in line]
    assert "/api/openai/%1B[2J%1B[31mred%C2%85 " in lines[0]
    assert (
        "/api/anthropic/v1/x%20200%20in=0%20out=0%20dur=1ms%20ttfb=-%20forwarded%0B%0C%1B[0m "
        in (lines[1])
    )
    for line in lines:
        assert not any(c < " " or "\x7f" <= c <= "\x9f" for c in line.rstrip("\n"))


def web_post(port: int, path: str, password: str) -> int:
    """A POST as mitmweb's UI sends it: the XSRF cookie echoed in a header (any token the
    client picks, as tornado's double-submit check allows)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=b"",
        method="POST",
        headers={
            "Authorization": f"Bearer {password}",
            "Cookie": "_mitmproxy_xsrf=0123abcd",
            "X-XSRFToken": "0123abcd",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_scripts_web_shows_the_decision_in_the_flow_list(
    keyrelay_factory: object, upstream: UpstreamServer
) -> None:
    web_port, password, down = free_port(), "web-pass-5678", free_port()
    proc: KeyrelayProcess = keyrelay_factory(  # type: ignore[operator]
        command=[str(MITM_SCRIPT.parent / "web")],
        hosts=[h for h in PROVIDER_HOSTS if h != "api.anthropic.com"],
        extra_args=[
            *("--set", f"web_port={web_port}", "--set", f"web_password={password}"),
            *("--set", "web_open_browser=false"),
            *("--set", f"keyrelay_connect_to=api.anthropic.com:443=127.0.0.1:{down}"),
        ],
    )
    upstream.route("POST", "/v1/chat/completions", echo_the_key)
    creds = {"authorization": f"Bearer {CLIENT_TOKEN}", "host": "localhost:3000"}
    with HttpClient(proc.port) as client:
        assert client.post("/api/openai/chat/completions", json={}, headers=creds).status == 401
        refused = client.request(
            "GET",
            "/api/fal/proxy?x=1",
            headers={**creds, "x-fal-target-url": "https://evil.example/"},
        )
        assert refused.status == 412
        assert client.post("/api/anthropic/v1/messages", json={}).status == 502
    proc.wait_for_output(r"reason=target-not-allowed")
    proc.wait_for_output(r"anthropic.*error=")
    options = json.loads(web_get(web_port, "/options", password))
    assert "comment" in options["web_columns"]["value"]
    flows = json.loads(web_get(web_port, "/flows", password))
    by_provider = {f["comment"].split(" | ")[1]: f for f in flows}  # after the decision
    refused_flow = by_provider["provider: fal"]
    forwarded = by_provider["provider: openai"]
    failed = by_provider["provider: anthropic"]  # the failure it got, not a pending flow
    assert failed["comment"].startswith("error | ") and failed["marked"]
    assert failed["response"]["status_code"] == 502
    assert refused_flow["comment"].startswith(
        "refused: target-not-allowed | provider: fal | rule: header x-fal-target-url "
        "| identity: ip:127.0.0.1 | sent: GET "
        "http://localhost:3000/api/fal/proxy?x=1 authorization: <client authorization sha256:"
    )
    assert refused_flow["comment"].endswith("x-fal-target-url: https://evil.example/")
    request = refused_flow["request"]  # the URL the client called
    assert (request["scheme"], request["host"], request["port"]) == ("http", "localhost", 3000)
    assert request["path"] == "/api/fal/proxy?x=1"
    assert forwarded["comment"].startswith("forwarded | ")
    assert forwarded["request"]["host"] == "api.openai.com"  # as forwarded...
    assert "sent: POST http://localhost:3000/api/openai/chat/completions" in forwarded["comment"]
    assert_no_secret("mitmweb /flows", json.dumps(flows))
    # The Replay button: refused, saying why (not sent to the provider with a masked key).
    before = len(upstream.requests)
    assert web_post(web_port, f"/flows/{forwarded['id']}/replay", password) == 200
    proc.wait_for_output(r"reason=replay-not-supported")
    assert len(upstream.requests) == before
