"""Replaying tests/flows/*.flows through keyrelay: no network, no keys, same responses.

The recordings are made by scripts/record-fixtures (tests/support/recorded_sessions.py); each is
replayed by scripts/replay and the client must see what was recorded, SSE included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mitmproxy import http, io
from support.client import HttpClient
from support.proxy import KeyrelayProcess
from support.recorded_sessions import REPLAY, SESSIONS, Session, run_calls
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
            events = [e for e in reply.body.split(b"\n\n") if e.strip()]
            assert len(events) >= 2 and all(b"data: " in e for e in events), call.name
    assert "replayed" in proc.output()
    assert "is configured" in proc.output()  # every provider routes on a placeholder key
    # The access log counts what each replayed response sent, streamed or not.
    sent = re.findall(r" out=(\d+) .* replayed$", proc.output(), re.MULTILINE)
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
    assert all(isinstance(s, EnvSource) for s in credential.sources)
    assert credential.header_value("k") == "Bearer k"
