"""A client's credentials: every header keyrelay knows one may arrive in is dropped before the
upstream, in one place (routing/forwarding.py), and masked wherever the flow is kept, whether
the request was forwarded or refused before anything looked at the credential."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support.guard import rules, token_entry

from addon.config.rules import load
from addon.relay import KeyRelay
from addon.routing.forwarding import upstream_headers

TOKEN = "custom-header-token-9a8b7c"
OWN_HEADER = "x-keyrelay-token"  # a provider's `auth: {header: ...}`
EVERY_CREDENTIAL_HEADER = {
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "xi-api-key",
    "x-goog-api-key",
    "x-fal-key",
    "cookie",
    "sec-websocket-protocol",  # a browser WebSocket's: its credential entries only
    OWN_HEADER,
}


def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KR_TOKENS", token_entry("alice", TOKEN))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream-key")
    monkeypatch.setenv("FAL_KEY", "fal-upstream-key")
    path = tmp_path / "rules.yaml"
    auth = {"mode": "tokens", "header": OWN_HEADER, "tokens": {"env": "KR_TOKENS"}}
    path.write_text(
        rules(defaults={"auth": auth}, openai={"allow": ["GET api.openai.com/v1/models"]})
    )
    return path


def test_every_credential_header_is_known_and_none_goes_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load(rules_file(tmp_path, monkeypatch), {})
    assert loaded.credential_headers == EVERY_CREDENTIAL_HEADER
    provider = loaded.providers[0]
    sent = [(name.encode(), b"client-secret") for name in sorted(EVERY_CREDENTIAL_HEADER)]
    fields = upstream_headers(
        [*sent, (b"x-client-source", b"app")],
        provider,
        "authorization",
        "Bearer sk-upstream-key",
        credentials=loaded.credential_headers,
    )
    assert b"client-secret" not in b"".join(value for _, value in fields)
    assert [v for n, v in fields if n == b"authorization"] == [b"Bearer sk-upstream-key"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/openai/chat/completions", 403),  # refused by the allowlist, before the guard
        ("/api/openai/models", None),  # admitted and forwarded
    ],
)
def test_a_credential_in_an_auth_header_of_its_own_is_never_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, status: int | None
) -> None:
    rules_path = rules_file(tmp_path, monkeypatch)

    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(rules_path))
            flow = tflow.tflow()
            flow.request.method = "POST" if "chat" in path else "GET"
            flow.request.path = path
            flow.request.headers = http.Headers(**{OWN_HEADER: TOKEN})
            flow.request.content = b""
            flow.response = None
            await relay.requestheaders(flow)
            if status is None:
                assert flow.response is None
                assert OWN_HEADER not in flow.request.headers  # never sent upstream
                flow.response = http.Response.make(200, b"{}")
                relay.responseheaders(flow)
            else:
                assert flow.response is not None and flow.response.status_code == status
            await relay.response(flow)
            # What mitmweb shows and a saved flow holds.
            assert TOKEN not in str(flow.request.headers), flow.request.headers

    asyncio.run(scenario())


def test_a_websocket_presents_keyrelays_credential_as_a_subprotocol() -> None:
    """A browser cannot set headers on a WebSocket: OpenAI's browser SDK sends its apiKey as
    `openai-insecure-api-key.<key>`, other clients `keyrelay-token.<token>` beside `keyrelay`."""
    from addon.auth.presented import presented
    from addon.config.auth import AuthSpec
    from addon.config.credential import upstream_protocols

    def offered(protocol: str, *, upgrade: str = "websocket") -> str | None:
        fields = {"upgrade": upgrade, "sec-websocket-protocol": protocol}
        return presented(AuthSpec(mode="tokens"), fields.get)

    assert offered(f"realtime, openai-insecure-api-key.{TOKEN}") == TOKEN
    assert offered(f"keyrelay, keyrelay-token.{TOKEN}") == TOKEN
    assert offered("realtime") is None
    assert offered(f"keyrelay-token.{TOKEN}", upgrade="h2c") is None  # a WebSocket's only
    assert upstream_protocols(f"realtime, openai-insecure-api-key.{TOKEN}") == "realtime"
    assert upstream_protocols(f"keyrelay, keyrelay-token.{TOKEN}") is None
