"""The header fuzz, in process: every head from tests/support/fuzz.py through keyrelay's request
hooks, under rules that switch on each header parser (CORS origins, tokens, JWT cookies, body
rules). No head may make a hook fail: a failure is a 500 `internal-error` (and, in mitmdump's
first seconds, an exit). The e2e half (tests/e2e/test_hostile_heads.py) sends them on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support.fuzz import ENV, RULES, heads

from addon import flowstate
from addon.relay import KeyRelay


def flow_for(method: str, path: str, headers: list[tuple[str, str]]) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = method
    flow.request.path = path
    flow.request.headers = http.Headers(
        [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers]
    )
    flow.request.content = b'{"model": "gpt-4o-mini"}' if method in ("POST", "PUT") else b""
    return flow


@pytest.mark.parametrize("name", sorted(RULES))
def test_no_head_makes_a_request_hook_fail(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES[name])
    failures: list[str] = []
    caplog.set_level(logging.WARNING)

    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(path))
            for seed, (method, target, headers) in enumerate(heads(13, 1500)):
                flow = flow_for(method, target, headers)
                await relay.requestheaders(flow)
                if flow.response is None:
                    await relay.request(flow)
                if flow.response is None and flow.request.host != "address":  # forwarded
                    flow.response = tflow.tresp(headers=http.Headers(content_encoding="gzip"))
                    relay.responseheaders(flow)  # a failure here kills the flow
                    await relay.response(flow)
                else:
                    await relay.error(flow)  # frees slots, as a client that went away would
                errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
                if errors or flowstate.of(flow).get("reason") == "internal-error":
                    failures.append(f"#{seed}: {method} {target} {headers!r}"[:400])
                caplog.clear()

    asyncio.run(scenario())
    assert not failures, f"{len(failures)} heads failed a hook:\n" + "\n".join(failures[:10])
