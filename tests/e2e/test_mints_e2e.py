"""End to end: credentials minted through keyrelay for a browser (an OpenAI Realtime client
secret, a Gemini Live token, an ElevenLabs single-use token) are held to the rules before they
exist. The model they are for is checked, their lifetime lowered to the cap (never raised), and
under a budget each mint is charged the worst case of the session it enables, or refused when
that does not fit. The real `openai` SDK makes the OpenAI mints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import TEST_KEYS
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

ALICE = "alice-token-7f20"
ENV = {"KR_TOKENS": token_entry("alice", ALICE)}
MINUTE = 0.06  # USD per minute of a Realtime session a minted key may start
AUTH = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}


def openai_mint(req: RecordedRequest, w: ResponseWriter) -> None:
    """OpenAI's answer to a client-secret request (ClientSecretCreateResponse): the key, its
    expiry from the lifetime asked for, the session. Minting bills nothing: sessions bill."""
    body = req.json()
    seconds = body.get("expires_after", {}).get("seconds", 600)
    w.send_json(
        {
            "value": "ek_minted_for_the_browser",
            "expires_at": int(datetime.now(UTC).timestamp()) + seconds,
            "session": {**body.get("session", {}), "id": "sess_1", "object": "realtime.session"},
        }
    )


def start(factory: Any, budget: float | None = None, **validation: Any) -> HttpClient:
    providers: dict[str, Any] = {
        "openai": {
            "allow": ["browser", "realtime.client_secrets", "realtime.sessions"],
            "validation": {"models": ["gpt-realtime*"], **validation},
            "prices": [{"model": "gpt-realtime*", "minute": MINUTE}],
        },
        "gemini": {
            "allow": ["browser", "auth_tokens"],
            "validation": {"models": ["gemini-live-*"], **validation},
            "prices": [{"model": "*", "minute": MINUTE}],
        },
        "elevenlabs": {"allow": ["browser", "single_use_token"], "validation": validation},
    }
    doc: dict[str, Any] = {"defaults": {"auth": AUTH}, "providers": providers}
    if budget is not None:
        doc["budget"] = {"daily": budget}
    proc = factory(yaml.safe_dump(doc), env=ENV)
    return HttpClient(proc.port)


def sdk(client: HttpClient) -> openai.OpenAI:
    """The app's server would hold a real key; the browser-facing app holds keyrelay's token."""
    return openai.OpenAI(
        api_key=ALICE, base_url=f"http://127.0.0.1:{client.port}/api/openai", max_retries=0
    )


def spent(client: HttpClient) -> dict[str, Any]:
    answer = client.get("/_keyrelay/usage", [("Authorization", f"Bearer {ALICE}")])
    return answer.json()  # type: ignore[no-any-return]


def test_a_client_secret_is_capped_checked_and_charged_its_sessions_worst_case(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/realtime/client_secrets", openai_mint)
    client = start(keyrelay_factory, budget=10.0)
    key = sdk(client).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 7200},
        session={"type": "realtime", "model": "gpt-realtime"},
    )
    assert key.value == "ek_minted_for_the_browser"
    (sent,) = upstream.requests
    body = sent.json()
    # Two hours asked for, five minutes granted; the rest of the request as the SDK sent it.
    assert body["expires_after"] == {"anchor": "created_at", "seconds": 300}
    assert body["session"] == {"type": "realtime", "model": "gpt-realtime"}
    assert sent.header("authorization") == f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"
    # Charged what the key can be spent with: its 300 s and one 60-minute session after them.
    usage = spent(client)
    assert usage["spent"] == pytest.approx((300 + 3600) / 60 * MINUTE)
    assert usage["reserved"] == 0

    # A key that asks for less keeps it, and is charged for that.
    sdk(client).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "realtime", "model": "gpt-realtime-mini"},
    )
    assert upstream.requests[-1].json()["expires_after"]["seconds"] == 60
    assert spent(client)["spent"] == pytest.approx((3900 + 3660) / 60 * MINUTE)


def test_a_key_for_a_model_the_rules_forbid_is_never_minted(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/realtime/", openai_mint)
    client = start(keyrelay_factory)
    for session in (
        {"type": "realtime", "model": "gpt-4o-realtime-preview"},
        {"type": "realtime"},  # names none: OpenAI would choose
    ):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk(client).realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
        assert refused.value.status_code == 403
    # The beta API's sessions name the model at the top; their keys live 60 s: under the cap.
    beta = client.post(
        "/api/openai/realtime/sessions",
        json={"model": "o3"},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert beta.status == 403 and beta.json()["type"].endswith("model-not-allowed")
    assert upstream.requests == []


def test_under_a_budget_a_mint_that_does_not_fit_is_refused_before_it_is_made(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/realtime/client_secrets", openai_mint)
    client = start(keyrelay_factory, budget=3.0)  # one mint's worst case: 3.90 USD
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(client).realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime"}
        )
    assert refused.value.status_code in (403, 429)
    assert upstream.requests == [] and spent(client)["spent"] == 0


def test_a_gemini_live_token_expires_by_the_cap(
    keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    def google(req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_json({"name": "auth_tokens/minted-for-the-browser"})

    upstream.route("POST", "/v1alpha/auth_tokens", google, host="generativelanguage.googleapis.com")
    client = start(keyrelay_factory, budget=10.0)
    asked = datetime.now(UTC) + timedelta(hours=1)
    answer = client.post(
        "/api/gemini/v1alpha/auth_tokens",
        json={
            "uses": 1,
            "expireTime": asked.isoformat().replace("+00:00", "Z"),
            "bidiGenerateContentSetup": {"model": "models/gemini-live-2.5-flash"},
        },
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert answer.status == 200, answer.body
    sent = upstream.requests[0].json()
    expires = datetime.fromisoformat(sent["expireTime"].replace("Z", "+00:00"))
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=300)
    assert sent["bidiGenerateContentSetup"] == {"model": "models/gemini-live-2.5-flash"}
    assert spent(client)["spent"] == pytest.approx(300 / 60 * MINUTE, rel=0.01)


def test_a_credential_that_lives_longer_than_the_cap_and_cannot_be_shortened_is_refused(
    keyrelay_factory: Any, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """ElevenLabs' single-use tokens live 15 minutes, whatever the request says."""

    def token(req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_json({"token": "sutkn_minted"})

    upstream.route("POST", "/v1/single-use-token/", token, host="api.elevenlabs.io")
    headers = {"Authorization": f"Bearer {ALICE}"}
    path = "/api/elevenlabs/v1/single-use-token/realtime_scribe"
    refused = start(keyrelay_factory).post(path, json={}, headers=headers)
    assert refused.status == 403 and "900 s" in refused.json()["detail"]
    assert upstream.requests == []
    allowed = start(keyrelay_factory, max_credential_seconds=900).post(path, headers=headers)
    assert allowed.status == 200 and allowed.json() == {"token": "sutkn_minted"}
