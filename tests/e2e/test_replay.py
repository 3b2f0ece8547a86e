"""Replaying tests/flows/*.flows through keyrelay: no network, no keys, same responses.

The recordings are made by scripts/record-fixtures (tests/support/recorded_sessions.py); each is
replayed by scripts/replay and the client must see what was recorded, SSE included.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from mitmproxy import http, io
from support.client import HttpClient
from support.proxy import REPO, KeyrelayProcess
from support.recorded_sessions import FLOWS, REPLAY, SESSIONS, Session, run_calls
from support.tls import TlsMaterial

from addon.config.credential import EnvSource
from addon.config.rules import load
from addon.observe.replay import offline


def recorded_responses(file: Path) -> list[http.Response]:
    """The responses keyrelay forwarded, in the order they were recorded."""
    with file.open("rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]
    return [
        fl.response
        for fl in flows
        if fl.response and fl.metadata.get("keyrelay", {}).get("decision") == "forwarded"
    ]


def start_replay(file: Path, test_ca: TlsMaterial, tmp_path: Path) -> KeyrelayProcess:
    # No keys in the environment and no connect_to: nothing could reach an upstream.
    return KeyrelayProcess(
        upstream_port=9,
        ca_file=test_ca.ca_cert,
        workdir=tmp_path / "replay",
        keys={},
        hosts=(),
        command=[str(REPLAY), str(file)],
    ).start()


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.provider)
def test_replay_serves_the_recorded_responses(
    session: Session, test_ca: TlsMaterial, tmp_path: Path
) -> None:
    recorded = recorded_responses(session.file)
    assert len(recorded) == len(session.calls), f"re-record {session.file}"
    proc = start_replay(session.file, test_ca, tmp_path)
    try:
        with HttpClient(proc.port) as client:
            replies = run_calls(client, session.calls, lambda _call: None)
    finally:
        proc.stop()
    for call, reply, response in zip(session.calls, replies, recorded, strict=True):
        assert reply.status == response.status_code, (call.name, reply.body)
        assert reply.body == response.raw_content, call.name
        assert reply.header("content-type") == response.headers.get("content-type")
        if call.streamed and "event-stream" in (reply.header("content-type") or ""):
            events = [e for e in re.split(rb"\r?\n\r?\n", reply.body) if e.strip()]  # Gemini: CRLF
            assert len(events) >= 2 and all(b"data: " in e for e in events), call.name
    assert "replayed" in proc.output()
    assert "is configured" in proc.output()  # every provider routes on a placeholder key
    # The access log counts what each replayed response sent, streamed or not.
    # (A metered answer's line goes on with its usage and cost.)
    sent = re.findall(r" out=(\d+) .* replayed(?: usage=.*)?$", proc.output(), re.MULTILINE)
    assert sorted(map(int, sent)) == sorted(len(r.raw_content or b"") for r in recorded)


def test_replay_never_reaches_the_network(test_ca: TlsMaterial, tmp_path: Path) -> None:
    session = SESSIONS[0]
    proc = start_replay(session.file, test_ca, tmp_path)
    try:
        with HttpClient(proc.port) as client:
            unrecorded = client.post("/api/anthropic/v1/messages", json={"model": "not-recorded"})
            refused = client.request(
                "GET", "/api/fal/proxy", headers={"x-fal-target-url": "https://evil.example/"}
            )
    finally:
        proc.stop()
    assert unrecorded.status == 502
    assert json.loads(unrecorded.body)["type"].endswith("/not-recorded")
    # keyrelay's own checks still run before any replayed response.
    assert refused.status == 412


def test_offline_rules_never_read_a_real_key_source(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        """
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential:
      header: authorization
      format: "Bearer {key}"
      pool: {keys: [{command: ["false"]}, {file: /run/secrets/openai}]}
      tenants: {file: /run/secrets/tenants.yaml, fallback: shared}
"""
    )
    credential = offline(load(tmp_path / "rules.yaml", {})).providers[0].credential
    assert credential.pool is None and credential.tenants is None
    assert all(isinstance(s, EnvSource) for s in credential.key)
    assert credential.header_value("k") == "Bearer k"


def readme_curls() -> list[tuple[str, list[str]]]:
    """The README's "One curl per provider" commands: (provider, curl arguments)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## One curl per provider", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [c for c in block.replace("\\\n", " ").splitlines() if c.startswith("curl ")]
    found = []
    for command in commands:
        args = shlex.split(command)
        provider = re.search(r"/api/(\w+)/", command)
        assert provider, command
        found.append((provider[1], args))
    return found


@pytest.mark.parametrize(
    "provider,args", readme_curls(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_readme_curl_replays_from_the_recording(
    provider: str, args: list[str], test_ca: TlsMaterial, tmp_path: Path
) -> None:
    proc = start_replay(FLOWS / f"{provider}.flows", test_ca, tmp_path)
    try:
        url = f"127.0.0.1:{proc.port}"
        args = [a.replace("localhost:8080", url) for a in args]
        done = subprocess.run(
            [*args, "--fail-with-body", "-sS", "--max-time", "20"],
            cwd=tmp_path,
            capture_output=True,
            timeout=30,
        )
    finally:
        proc.stop()
    assert done.returncode == 0, (done.stdout, done.stderr, proc.output())
    assert re.search(r" replayed(?: usage=.*)?$", proc.output(), re.MULTILINE)


def test_replay_keeps_serving_past_the_end_of_the_recording(
    test_ca: TlsMaterial, tmp_path: Path
) -> None:
    session = SESSIONS[1]  # openai: two calls
    proc = start_replay(session.file, test_ca, tmp_path)
    try:
        with HttpClient(proc.port) as client:
            run_calls(client, session.calls, lambda _call: None)
            time.sleep(0.5)  # mitmproxy's keepserving checks every 0.1 s
            again = client.post(
                "/api/openai/chat/completions",
                b'{"messages":[{"role":"user","content":"Say hello"}],"model":"gpt-4o-mini"}',
                headers={"content-type": "application/json"},
            )
            other = client.post("/api/openai/chat/completions", json={"model": "gpt-5"})
        assert proc.alive()
    finally:
        proc.stop()
    assert again.status == 502, again.body
    assert "served already" in again.json()["detail"]
    detail = other.json()["detail"]
    assert "compared: method, host, path, query and body" in detail
    assert detail.endswith("the nearest differs in JSON body messages, model")


def test_a_recording_with_nothing_replayable_says_so_and_serves(
    test_ca: TlsMaterial, tmp_path: Path
) -> None:
    refused = tmp_path / "refused.flows"
    with (FLOWS / "openai.flows").open("rb") as f, refused.open("wb") as out:
        writer = io.FlowWriter(out)
        for flow in io.FlowReader(f).stream():
            flow.metadata["keyrelay"] = {"decision": "refused", "reason": "unauthenticated"}
            writer.add(flow)
    proc = start_replay(refused, test_ca, tmp_path)
    try:
        proc.wait_for_output(r"holds nothing to replay .*502 not-recorded")
        time.sleep(0.5)
        with HttpClient(proc.port) as client:
            reply = client.post("/api/openai/chat/completions", json={"model": "gpt-4o-mini"})
    finally:
        proc.stop()
    assert reply.status == 502
    assert reply.json()["type"].endswith("/not-recorded")
    assert "holds no replayable response" in reply.json()["detail"]
