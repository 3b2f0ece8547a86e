"""Replay mode: placeholder keys, only forwarded recordings replayed, never the network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import ctx, exceptions, io
from mitmproxy.addons.keepserving import KeepServing
from mitmproxy.addons.serverplayback import ServerPlayback
from mitmproxy.connection import Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from addon import flowstate
from addon.caller import Caller
from addon.config.rules import Rules, load
from addon.keys.choice import Key
from addon.keys.store import KeyStore
from addon.observe.replay import Replay, offline

RULES = """
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential:
      header: authorization
      format: "Bearer {key}"
      pool: {keys: [{env: A}, {file: b.key}]}
      tenants: {file: tenants.yaml, fallback: shared}
  my-llm:
    match: {prefix: /api/mine}
    upstream: https://llm.internal
    allow: ["* llm.internal/**"]
    credential: {header: x-api-key, key: {command: [print-my-key]}}
"""
REAL = "sk-real-key-0000000000"


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load(path, {"A": REAL})


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[tuple[Replay, ServerPlayback, Path]]:
    recording = tmp_path / "flows.mitm"
    forwarded, refused = tflow.tflow(resp=True), tflow.tflow(resp=True)
    forwarded.request.content = b'{"model": "m", "messages": [1, 2]}'
    flowstate.of(forwarded)["decision"] = "forwarded"
    flowstate.refused(flowstate.of(refused), "unauthenticated")
    with recording.open("wb") as f:
        writer = io.FlowWriter(f)
        for flow in (forwarded, refused, tflow.tflow()):
            writer.add(flow)
    component, playback = Replay(), ServerPlayback()
    with taddons.context(component, playback, KeepServing()) as tctx:
        tctx.configure(playback, server_replay=[str(recording)])
        tctx.configure(component, keyrelay_replay=True)
        yield component, playback, recording


def connect(replay: Replay) -> Server:
    server = Server(address=("api.openai.com", 443))
    replay.server_connect(ServerConnectionHookData(server=server, client=tflow.tclient_conn()))
    return server


def test_offline_rules_hold_one_placeholder_key_per_provider(rules: Rules) -> None:
    placeholder = offline(rules)
    for provider in placeholder.providers:
        credential = provider.credential
        assert credential.pool is None and credential.tenants is None
        assert credential.header in ("authorization", "x-api-key")
    assert [p.credential.format for p in placeholder.providers] == ["Bearer {key}", "{key}"]
    assert placeholder.env["KEYRELAY_REPLAY_MY_LLM"] == "replay-placeholder-my-llm"
    assert rules.providers[0].credential.pool is not None  # the loaded rules are untouched

    async def picked() -> list[str]:
        keys = KeyStore(placeholder)
        out = []
        for provider in placeholder.providers:
            key = await keys.requestheaders(tflow.tflow(), provider, Caller("ip:127.0.0.1"))
            assert isinstance(key, Key)
            out.append(key.value)
        assert REAL not in keys.secrets()
        return out

    assert asyncio.run(picked()) == ["replay-placeholder-openai", "replay-placeholder-my-llm"]


def test_without_replay_the_real_rules_and_network_are_used(rules: Rules) -> None:
    component = Replay()
    with taddons.context(component):
        assert component.keyed_rules(rules) is rules
        assert connect(component).error is None
        component.running()  # nothing to load


def test_replay_mode_never_reaches_the_network(
    rules: Rules, replay: tuple[Replay, ServerPlayback, Path]
) -> None:
    component, _, _ = replay
    assert component.keyed_rules(rules).env["KEYRELAY_REPLAY_OPENAI"]
    error = connect(component).error
    assert error is not None
    failed = component.failed()  # what the flow's error page says, as a value
    assert failed is not None and (failed.status, failed.reason) == (502, "not-recorded")


def test_only_forwarded_recordings_are_replayed(
    replay: tuple[Replay, ServerPlayback, Path],
) -> None:
    component, playback, _ = replay
    assert playback.count() == 3  # what mitmproxy loaded itself: every recorded flow
    component.running()
    assert playback.count() == 0  # keyrelay matches itself
    assert len(component.recording) == 1


def test_replay_keeps_serving_until_stopped(replay: tuple[Replay, ServerPlayback, Path]) -> None:
    assert ctx.options.keepserving is True


def test_a_json_body_matches_by_value_once(replay: tuple[Replay, ServerPlayback, Path]) -> None:
    component, _, _ = replay
    component.running()
    live = tflow.tflow()
    live.request.content = b'{"messages":[1,2],"model":"m"}'  # JSON.stringify's spacing, reordered
    assert component.request(live) is None
    assert live.response is not None and live.is_replay == "response"
    again = tflow.tflow()
    again.request.content = live.request.content
    refusal = component.request(again)
    assert refusal is not None and refusal.reason == "not-recorded"
    assert "served already" in refusal.detail


def test_not_recorded_says_what_the_nearest_request_differs_in(
    replay: tuple[Replay, ServerPlayback, Path],
) -> None:
    component, _, _ = replay
    component.running()
    live = tflow.tflow()
    live.request.content = b'{"model": "other", "messages": [1, 2]}'
    refusal = component.request(live)
    assert refusal is not None and refusal.status == 502
    assert "compared: method, host, path, query and body" in refusal.detail
    assert refusal.detail.endswith("the nearest differs in JSON body model")
    assert "other" not in refusal.detail  # names, never values


def test_an_unreadable_recording_is_an_options_error(
    replay: tuple[Replay, ServerPlayback, Path],
) -> None:
    component, _, recording = replay
    recording.write_bytes(b"not a flow file")
    with pytest.raises(exceptions.OptionsError, match="server_replay"):
        component.running()


def test_mitmwebs_replay_button_is_refused_saying_why() -> None:
    component = Replay()
    with taddons.context(component):
        replayed = tflow.tflow()
        replayed.is_replay = "request"
        refusal = component.requestheaders(replayed)
        assert refusal is not None and refusal.reason == "replay-not-supported"
        assert "client's request again" in refusal.detail
        assert component.requestheaders(tflow.tflow()) is None
