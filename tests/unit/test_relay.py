"""Hook-level checks with mitmproxy's own test helpers: what only a broken addon would show."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.connection import ConnectionState, Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow
from support.repo import RULES

from addon import flowstate
from addon.relay import KeyRelay


def test_an_exception_in_a_hook_answers_500_and_is_not_forwarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(RULES))
            assert relay.routing.router is not None

            def broken(*_args: object) -> None:
                raise RuntimeError("boom with a secret-looking value sk-live-123")

            monkeypatch.setattr(relay.routing.router, "route", broken)
            flow = tflow.tflow()
            flow.request.path = "/api/anthropic/v1/messages"
            await relay.requestheaders(flow)
            assert flow.response is not None
            assert flow.response.status_code == 500
            assert b"sk-live-123" not in flow.response.content
            assert flowstate.of(flow) == {
                "decision": "refused",
                "reason": "internal-error",
                "detail": "keyrelay failed to handle this request",  # never the exception's text
            }

    asyncio.run(scenario())


def test_connect_to_redirects_and_restores_the_address() -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(
                relay,
                keyrelay_rules=str(RULES),
                keyrelay_connect_to=["api.openai.com:443=127.0.0.1:9443"],
            )
            server = Server(address=("api.openai.com", 443))
            data = ServerConnectionHookData(server=server, client=tflow.tclient_conn())
            relay.server_connect(data)
            assert server.address == ("127.0.0.1", 9443)
            server.state = ConnectionState.OPEN
            relay.server_connected(data)
            assert server.address == ("api.openai.com", 443)

    asyncio.run(scenario())


def test_a_failing_closing_step_never_skips_the_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(RULES))
            assert relay.keys is not None

            def broken(_flow: object) -> None:
                raise RuntimeError("transport bug")

            monkeypatch.setattr(relay.transport, "response", broken)
            monkeypatch.setattr(relay.keys, "secrets", lambda: {"sk-test-secret-1": "<KEY>"})
            flow = tflow.tflow(resp=True)
            flow.request.headers["authorization"] = "Bearer sk-test-secret-1"
            await relay.response(flow)
            assert flow.request.headers["authorization"] == "Bearer <KEY>"

    asyncio.run(scenario())


def test_a_failing_response_head_is_killed_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(RULES))

            def broken(_flow: object) -> None:
                raise RuntimeError("transport bug")

            monkeypatch.setattr(relay.transport, "responseheaders", broken)
            flow = tflow.tflow(resp=True)
            relay.responseheaders(flow)
            assert flow.error is not None and flow.error.msg == "Connection killed."

    asyncio.run(scenario())


def test_an_answer_to_head_has_the_head_of_a_get_and_no_content() -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(RULES))
            get, head = tflow.tflow(), tflow.tflow()
            for flow, method in ((get, "GET"), (head, "HEAD")):
                flow.request.method, flow.request.path = method, "/nowhere"
                await relay.requestheaders(flow)
            assert get.response is not None and head.response is not None
            assert head.response.status_code == get.response.status_code == 404
            assert head.response.raw_content == b""
            assert head.response.headers["content-length"] == str(len(get.response.content or b""))

    asyncio.run(scenario())
