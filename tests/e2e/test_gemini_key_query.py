"""End to end: a Gemini key a client puts in the query (`?key=`, as Google's REST API takes it)
or in x-goog-api-key never goes upstream, and no saved flow, HAR export, access log line,
output or answer shows it, whether keyrelay forwarded the call or refused it."""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http, io
from support.client import HttpClient
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.recorded_sessions import RECORD
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

HOST = "generativelanguage.googleapis.com"
QUERY_KEY = "AIzaSyClientQueryKey-5e1f"  # what a client puts in ?key=
ESCAPED_KEY = "AIzaSyClientEscaped/Key+9"  # sent escaped: AIzaSyClientEscaped%2FKey%2B9
HEADER_KEY = "AIzaSyClientHeaderKey-77c0"  # what a client puts in x-goog-api-key
CLIENT_KEYS = (QUERY_KEY, ESCAPED_KEY, "AIzaSyClientEscaped%2FKey%2B9", HEADER_KEY)
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def gemini(req: RecordedRequest, w: ResponseWriter) -> None:
    answer = {
        "candidates": [{"content": {"parts": [{"text": "hello"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        "modelVersion": "gemini-2.5-flash",
    }
    if "stream" in req.path:
        w.send_sse([json.dumps(answer)])
    else:
        w.send_json(answer)


def assert_no_client_key(label: str, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for secret in CLIENT_KEYS:
        assert secret.encode() not in blob, f"{secret!r} found in {label}"


def test_a_client_key_in_the_query_or_header_is_dropped_and_never_kept(
    keyrelay_factory: object, upstream: UpstreamServer, tmp_path: Path
) -> None:
    flows_file, har, log = tmp_path / "out.flows", tmp_path / "out.har", tmp_path / "access.log"
    proc: KeyrelayProcess = keyrelay_factory(  # type: ignore[operator]
        command=[str(RECORD), str(flows_file)],
        extra_args=[
            "--set",
            f"hardump={har}",
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
        ],
    )
    upstream.route("POST", "/v1beta/models/", gemini, host=HOST)
    header = {"x-goog-api-key": HEADER_KEY}
    with HttpClient(proc.port) as client:
        answers = [
            client.post(f"/api/gemini{GENERATE}?key={QUERY_KEY}", json=BODY, headers=header),
            client.post(
                f"/api/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
                f"?alt=sse&key={QUERY_KEY}",
                json=BODY,
            ),
            client.post(f"/api/gemini{GENERATE}?K%65y=AIzaSyClientEscaped%2FKey%2B9", json=BODY),
            client.get(f"/api/gemini/v1beta/files?key={QUERY_KEY}", headers=header),  # refused
            client.get(f"/api/nowhere?key={QUERY_KEY}"),  # no provider
        ]
    assert [a.status for a in answers] == [200, 200, 200, 403, 404]
    for answer in answers:
        head = "".join(f"{name}: {value}\n" for name, value in answer.headers)
        assert_no_client_key("an answer", head.encode() + answer.body)

    targets = [r.target for r in upstream.requests]
    assert targets == [
        GENERATE,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        GENERATE,
    ]
    for got in upstream.requests:
        assert got.header_all("x-goog-api-key") == [TEST_KEYS["GEMINI_API_KEY"]]
        assert_no_client_key("what Gemini got", got.raw_head + got.body)

    proc.wait_for_output(r"/api/nowhere", timeout=10)
    proc.stop()
    assert_no_client_key("the -w file", flows_file.read_bytes())
    assert_no_client_key("the HAR export", har.read_bytes())
    assert_no_client_key("the access log", log.read_text())
    assert_no_client_key("keyrelay's output", proc.output())

    with flows_file.open("rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]
    refused = next(fl for fl in flows if fl.request.path.startswith("/api/gemini/v1beta/files"))
    assert "?key=<client-key-sha256:" in refused.request.path
    assert "sent: GET" in refused.comment and "?key=<client-key-sha256:" in refused.comment
    forwarded = next(fl for fl in flows if fl.request.path == GENERATE)
    assert forwarded.request.headers["x-goog-api-key"] == "<GEMINI_API_KEY>"
