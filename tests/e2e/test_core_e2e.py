"""The core through the real mitmdump: routing, key injection, refusals, reloads, options."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from support.client import HttpClient
from support.proxy import REPO, KeyrelayProcess, ProxyStartError
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, json_response

CLIENT_CREDENTIALS = [
    ("Authorization", "Bearer client-chosen-key"),
    ("X-Api-Key", "client-chosen-key"),
    ("xi-api-key", "client-chosen-key"),
    ("Cookie", "session=client-cookie"),
    ("Origin", "http://localhost:3000"),
    ("Referer", "http://localhost:3000/app"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Site", "same-origin"),  # a page served beside keyrelay: no CORS needed
    ("X-Forwarded-For", "10.9.8.7"),
]

# (provider, client path, extra headers, upstream host, upstream path+query, key header, value)
CASES = [
    (
        "anthropic",
        "/api/anthropic/v1/messages?beta=true",
        [("anthropic-version", "2023-06-01")],
        "api.anthropic.com",
        "/v1/messages?beta=true",
        "x-api-key",
        "{ANTHROPIC_API_KEY}",
    ),
    (
        "openai",
        "/api/openai/chat/completions?x=1&y=%20",
        [],
        "api.openai.com",
        "/v1/chat/completions?x=1&y=%20",
        "authorization",
        "Bearer {OPENAI_API_KEY}",
    ),
    (
        "elevenlabs",
        "/api/elevenlabs/v1/text-to-speech/voice1?output_format=mp3_44100_128",
        [],
        "api.elevenlabs.io",
        "/v1/text-to-speech/voice1?output_format=mp3_44100_128",
        "xi-api-key",
        "{ELEVENLABS_API_KEY}",
    ),
    (
        "fal",
        "/api/fal/proxy",
        [
            ("x-fal-target-url", "https://queue.fal.run/fal-ai/flux/dev?fal_webhook=x"),
            ("x-fal-queue-priority", "normal"),
        ],
        "queue.fal.run",
        "/fal-ai/flux/dev?fal_webhook=x",
        "authorization",
        "Key {FAL_KEY}",
    ),
    (
        "inference",
        "/somewhere/else",
        [("x-inf-target-url", "https://api.inference.sh/apps/run"), ("X-Client-Source", "sdk")],
        "api.inference.sh",
        "/apps/run",
        "authorization",
        "Bearer {INFERENCE_API_KEY}",
    ),
]

JOB = "0b6c2a1e-4f3d-4e2a-9c1b-7a8d9e0f1a2b"  # a fal request id


@pytest.mark.parametrize(
    ("provider", "path", "extra", "host", "upstream_path", "header", "value"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_each_provider_gets_the_request_with_its_key_once(
    client: HttpClient,
    upstream: UpstreamServer,
    TEST_KEYS: dict[str, str],
    provider: str,
    path: str,
    extra: list[tuple[str, str]],
    host: str,
    upstream_path: str,
    header: str,
    value: str,
) -> None:
    body = b'{"prompt": "a lighthouse", "bytes": "\\u00e9"}\n'
    upstream.route("POST", "/", json_response({"ok": provider}, headers=[("x-request-id", "r1")]))
    reply = client.request(
        "POST", path, body, [("Content-Type", "application/json"), *CLIENT_CREDENTIALS, *extra]
    )

    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": provider}
    assert reply.header("x-request-id") == "r1"
    got = upstream.only_request()
    assert got.method == "POST"
    assert got.target == upstream_path
    assert got.body == body
    assert got.host == host
    assert got.sni == host
    assert got.header_all(header) == [value.format(**TEST_KEYS)]
    for name, sent in CLIENT_CREDENTIALS:
        assert sent not in str(got.headers), name
    assert not {"x-fal-target-url", "x-inf-target-url"} & set(got.header_names())
    assert got.header("accept-encoding") == "identity"
    for name, v in extra:
        if not name.lower().endswith("-target-url"):
            assert got.header(name) == v


def test_fal_forward_policy_and_elevenlabs_accept_default(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    client.request(
        "GET",
        "/api/fal/proxy",
        None,
        [
            ("x-fal-target-url", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}/status?logs=1"),
            ("anthropic-version", "x"),
            ("Accept", "application/json"),
            ("User-Agent", "fal-client"),
        ],
    )
    got = upstream.only_request()
    assert got.target == f"/fal-ai/flux/requests/{JOB}/status?logs=1"
    assert "anthropic-version" not in got.header_names()
    assert got.header("x-fal-client-proxy") == "keyrelay"
    assert got.header("user-agent") == "fal-client"
    upstream.clear_requests()
    client.request("POST", "/api/elevenlabs/v1/text-to-speech/v", b"{}", [])
    assert upstream.only_request().header("accept") == "audio/mpeg"


def test_inference_query_parameter_target(client: HttpClient, upstream: UpstreamServer) -> None:
    reply = client.get(
        "/api/inference/proxy?__inf_target=https%3A%2F%2Fapi.inference.sh%2Ftasks%2Ft1%2Fstream"
    )
    assert reply.status == 200
    assert upstream.only_request().target == "/tasks/t1/stream"


HOSTILE_TARGETS = [
    "https://fal.run@evil.com/",
    "https://evil.com#.fal.run",
    "https://fal.run.evil.com/x",
    "https://evil.com/?x=fal.run",
    "https://fal.run:8443/x",
    "https://127.0.0.1/x",
    "https://[::1]/x",
    "http://fal.run/x",
    "https://fal.run\\@evil.com/",
    "https://fal.run%40evil.com/",
    "https://evil.com/%2e%2e/fal.run",
    "https://xn--fl-7kc.run/x",  # "fal.run" spelt with a Cyrillic "a"
    "https://2130706433/",
    "https://localhost/",
    "//fal.run/x",
    "fal.run/x",
    "https://fal.run/a%2f..%2fb",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_targets_never_reach_an_upstream(
    client: HttpClient, upstream: UpstreamServer, target: str
) -> None:
    reply = client.request("POST", "/api/fal/proxy", b"{}", [("x-fal-target-url", target)])
    assert reply.status == 412
    assert reply.header("content-type") == "application/json"
    assert reply.json()["status"] == 412
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "kind"),
    [
        ("GET", "/api/fal/proxy", [], 400, "missing-target"),
        ("GET", "/nowhere", [], 404, "no-route"),
        (
            "PATCH",
            "/api/fal/proxy",
            [("x-fal-target-url", "https://fal.run/x")],
            405,
            "method-not-allowed",
        ),
    ],
)
def test_refusals_are_json_problems(
    client: HttpClient,
    upstream: UpstreamServer,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    status: int,
    kind: str,
) -> None:
    reply = client.request(method, path, None, headers)
    assert reply.status == status
    assert reply.header("content-type") == "application/json"
    problem = reply.json()
    assert set(problem) == {"type", "title", "status", "detail"}
    assert problem["status"] == status and problem["type"].endswith("/" + kind)
    assert upstream.requests == []


def test_many_requests_on_one_client_connection_reuse_one_upstream_connection(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    for i in range(30):
        reply = client.request("POST", "/api/openai/chat/completions", f'{{"i":{i}}}', [])
        assert reply.status == 200
    requests = upstream.wait_for_requests(30)
    assert client.connections_opened == 1
    assert len({r.connection_id for r in requests}) == 1


def test_a_missing_key_is_a_503_naming_the_variable_and_others_still_work(
    keyrelay_factory, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    keys = {k: v for k, v in TEST_KEYS.items() if k != "FAL_KEY"}
    proc = keyrelay_factory(keys=keys)
    assert "fal has no key: set FAL_KEY or FAL_KEY_ID and FAL_KEY_SECRET" in proc.output()
    with HttpClient(proc.port) as c:
        reply = c.request(
            "POST", "/api/fal/proxy", b"{}", [("x-fal-target-url", "https://fal.run/a/b")]
        )
        assert reply.status == 503
        assert "FAL_KEY" in reply.json()["detail"]
        assert upstream.requests == []
        assert c.request("POST", "/api/anthropic/v1/messages", b"{}", []).status == 200


def test_fal_key_id_and_secret_are_joined(keyrelay_factory, upstream: UpstreamServer) -> None:
    proc = keyrelay_factory(keys={"FAL_KEY_ID": "kid", "FAL_KEY_SECRET": "ksecret"})
    with HttpClient(proc.port) as c:
        c.request("POST", "/", b"{}", [("x-fal-target-url", "https://fal.run/a/b")])
    assert upstream.only_request().header_all("authorization") == ["Key kid:ksecret"]


def test_the_engine_is_tuned_and_the_start_up_heap_frozen_once(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    tuned = ["--set", "keyrelay_fast_dispatch=true", "--set", "keyrelay_fast_paths=true"]
    proc = keyrelay_factory(extra_args=tuned)  # whatever KEYRELAY_TEST_FAST_DISPATCH says
    with HttpClient(proc.port) as c:
        assert c.request("POST", "/api/anthropic/v1/messages", b"{}", []).status == 200
    frozen = proc.wait_for_output(r"(\d+) objects alive at start frozen")
    assert int(frozen[1]) > 20_000  # mitmproxy and keyrelay's modules, not a handful
    output = proc.output()
    assert output.count("objects alive at start frozen") == 1
    assert "fast hook dispatch on" in output and "fast paths on" in output


def test_unreachable_upstream_is_a_json_502_without_internal_addresses(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    proc = keyrelay_factory(upstream_port=1)  # nothing listens on port 1
    with HttpClient(proc.port) as c:
        reply = c.request("POST", "/api/anthropic/v1/messages", b"{}", [])
    assert reply.status == 502
    assert reply.header("content-type") == "application/json"
    assert reply.json()["status"] == 502
    assert "127.0.0.1" not in reply.text and ":1" not in reply.text and "<html" not in reply.text


def test_rules_are_reloaded_and_a_broken_edit_keeps_the_old(
    keyrelay_factory, upstream: UpstreamServer
) -> None:
    proc = keyrelay_factory()
    assert proc.rules_path is not None
    original = proc.rules_path.read_text()
    with HttpClient(proc.port) as c:
        assert c.request("POST", "/api/claude/v1/messages", b"{}", []).status == 404
        moved = "    profile: anthropic\n    match: {prefix: /api/claude}\n"
        proc.rules_path.write_text(original.replace("    profile: anthropic\n", moved))
        _eventually(lambda: c.request("POST", "/api/claude/v1/messages", b"{}", []).status == 200)
        proc.rules_path.write_text(original.replace("providers:", "providers:\n  bogus: 1\n", 1))
        proc.wait_for_output("keeping the previous rules", timeout=10)
        assert "providers.bogus: must be a mapping" in proc.output()
        assert c.request("POST", "/api/claude/v1/messages", b"{}", []).status == 200


def test_bad_options_stop_mitmdump_naming_the_option(keyrelay_factory) -> None:
    bad_connect_to = keyrelay_factory(extra_args=["--set", "keyrelay_connect_to=x"], start=False)
    misspelt = keyrelay_factory(extra_args=["--set", "keyrelay_conect_to=a:1=b:2"], start=False)
    for proc, message in [
        (misspelt, "keyrelay_conect_to: unknown keyrelay option"),
        (bad_connect_to, "keyrelay_connect_to: 'x' is not HOST:PORT=ADDR:PORT"),
    ]:
        with pytest.raises(ProxyStartError):
            proc.start()
        assert message in proc.output()


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "broken"])
def test_a_bad_rules_file_is_one_line_and_a_non_zero_exit(keyrelay_factory, missing) -> None:
    if missing:
        proc = keyrelay_factory(rules_path=Path("/nonexistent/rules.yaml"), start=False)
        message = "keyrelay_rules: /nonexistent/rules.yaml: (top level): cannot be read"
    else:
        proc = keyrelay_factory("providers:\n  x:\n    match: {prefix: nope}\n", start=False)
        message = "rules.yaml: providers.x.match.prefix: must look like /api/name"
    with pytest.raises(ProxyStartError):
        proc.start()
    output = proc.output()
    assert message in output
    assert [line for line in output.splitlines() if "keyrelay_rules" in line] == [
        line for line in output.splitlines() if message in line
    ]
    assert "Traceback" not in output
    assert "listening at" not in output  # it never started serving
    assert proc.returncode == 2


def test_test_keys_never_appear_in_logs_or_responses(
    keyrelay: KeyrelayProcess,
    client: HttpClient,
    upstream: UpstreamServer,
    TEST_KEYS: dict[str, str],
) -> None:
    upstream.set_default(json_response({"ok": True}))
    bodies = []
    for _, path, extra, *_ in CASES:
        bodies.append(client.request("POST", path, b"{}", extra).body)
        bodies.append(client.request("GET", path.replace("/api", "/nope"), None, extra).body)
    output = keyrelay.output()
    for key in TEST_KEYS.values():
        assert key not in output
        assert all(key.encode() not in b for b in bodies)


def _eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_scripts_dev_answers_the_readme_curl(tmp_path: Path) -> None:
    """`scripts/dev` then `curl localhost:8080/api/fal/proxy` is a 400 problem (on a free port)."""
    proc = KeyrelayProcess(
        upstream_port=1,
        ca_file=tmp_path / "none.pem",
        workdir=tmp_path,
        command=[str(REPO / "scripts" / "dev"), "--listen-port", "0"],
    )
    with proc, HttpClient(proc.port) as c:
        reply = c.get("/api/fal/proxy")
        assert reply.status == 400 and reply.json()["type"].endswith("missing-target")


def test_a_key_echoed_in_a_streamed_response_never_reaches_the_client(
    client: HttpClient, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    def echo_key(req: RecordedRequest, w: ResponseWriter) -> None:
        key = (req.header("authorization") or "").removeprefix("Bearer ").encode()
        w.send_head(
            401, [("content-type", "text/event-stream"), ("x-echo", key.decode())], chunked=True
        )
        w.write_chunk(b"data: first event\n\n")
        w.sleep(0.05)
        w.write_chunk(b"data: bad key " + key[:7])  # split across two chunks
        w.sleep(0.05)
        w.write_chunk(key[7:] + b"\n\n")
        w.end()

    upstream.route("POST", "/v1/chat", echo_key)
    reply = client.stream("POST", "/api/openai/chat/completions", b"{}", [])
    assert reply.status == 401
    assert TEST_KEYS["OPENAI_API_KEY"] not in reply.body.decode()
    assert TEST_KEYS["OPENAI_API_KEY"] not in str(reply.headers)
    assert b"data: bad key <OPENAI_API_KEY>********\n\n" in reply.body  # the key's length
    assert reply.chunks[0][1].startswith(b"data: first event")


def test_a_refused_request_is_answered_without_reading_its_large_body(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    """A 10 GiB upload to a route without a key: the 503 comes at once, the body is never read."""
    with socket.create_connection(("127.0.0.1", keyrelay.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/fal/proxy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10737418240\r\n"
            b"x-fal-target-url: https://evil.example/\r\n\r\n" + b"x" * 100_000
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 412 ")
    assert json.loads(body)["type"].endswith("/target-not-allowed")
    assert upstream.requests == []


def test_a_refused_small_body_keeps_the_connection(client: HttpClient) -> None:
    for _ in range(3):
        reply = client.request("POST", "/api/fal/proxy", b"{}" * 100, [("x-fal-target-url", "x")])
        assert reply.status == 412
    assert client.connections_opened == 1
