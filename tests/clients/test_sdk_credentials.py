"""With `auth:` on, how each provider's Python SDK, unmodified, sends keyrelay's token, and the 401
a token in the wrong place gets: its detail says where keyrelay looks, never the token."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
import yaml
from elevenlabs.client import ElevenLabs
from support.guard import token_entry
from support.proxy import DEFAULT_RULES, KeyrelayProcess
from support.upstream import UpstreamServer

from clients.provider_fakes import (
    ANTHROPIC_DELTAS,
    AUDIO,
    anthropic_messages,
    elevenlabs_tts,
    openai_chat_stream,
)

TOKEN = "kr_sdk-token-31f0"
LOOKS = "keyrelay looks in the Authorization header as Bearer <token>"


@pytest.fixture
def relay(keyrelay_factory: Any) -> KeyrelayProcess:
    rules = yaml.safe_load(DEFAULT_RULES.read_text())
    rules["defaults"]["auth"] = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}
    return keyrelay_factory(yaml.safe_dump(rules), env={"KR_TOKENS": token_entry("alice", TOKEN)})


def refused(error: Exception) -> str:
    """The 401's detail, checked to hold no token."""
    assert isinstance(error, (anthropic.AuthenticationError, openai.AuthenticationError))
    body = error.body
    assert error.status_code == 401 and TOKEN not in str(body) and "unused" not in str(body)
    assert isinstance(body, dict)
    return str(body["detail"])


def anthropic_say_hello(relay: KeyrelayProcess, **credential: Any) -> str:
    client = anthropic.Anthropic(
        base_url=f"{relay.url}/api/anthropic", max_retries=0, timeout=20, **credential
    )
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hi."}]
    )
    block = message.content[0]
    assert block.type == "text"
    return block.text


def test_anthropic_sends_the_token_as_its_key(
    relay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    """This SDK (2.x) sends `api_key` and `auth_token` alike as Authorization: Bearer. The JS SDK
    0.39 that the CE.SDK text plugin bundles sends `apiKey` as x-api-key (its `authToken` as
    Bearer): that header gets a 401 naming it and where keyrelay looks."""
    upstream.route("POST", "/v1/messages", anthropic_messages(), host="api.anthropic.com")
    assert anthropic_say_hello(relay, api_key=TOKEN) == "".join(ANTHROPIC_DELTAS)
    assert anthropic_say_hello(relay, auth_token=TOKEN) == "".join(ANTHROPIC_DELTAS)
    for got in upstream.requests:
        assert got.header_all("x-api-key") == [TEST_KEYS["ANTHROPIC_API_KEY"]]
        assert got.header("authorization") is None and TOKEN.encode() not in got.raw_head

    with pytest.raises(anthropic.AuthenticationError) as error:
        anthropic_say_hello(relay, default_headers={"X-Api-Key": TOKEN})
    detail = refused(error.value)
    assert detail.startswith("keyrelay needs a valid credential: a credential came in x-api-key,")
    assert LOOKS in detail
    assert len(upstream.requests) == 2  # the refused one never left keyrelay


def test_openai_sends_the_token_as_api_key(
    relay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    upstream.route("POST", "/v1/chat/completions", openai_chat_stream, host="api.openai.com")

    def chat(api_key: str) -> str:
        client = openai.OpenAI(
            base_url=f"{relay.url}/api/openai", api_key=api_key, max_retries=0, timeout=20
        )
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi."}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert chat(TOKEN)
    assert upstream.only_request().header_all("authorization") == [
        f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"
    ]
    with pytest.raises(openai.AuthenticationError) as error:
        chat("unused")  # the placeholder the client table once showed
    detail = refused(error.value)
    assert detail == (
        "keyrelay needs a valid credential: the token in the Authorization header is not valid"
    )


def test_elevenlabs_sends_the_token_in_its_headers(
    relay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    """Its `api_key` is xi-api-key; keyrelay's token goes in `headers`."""
    upstream.route("POST", "/v1/text-to-speech/", elevenlabs_tts, host="api.elevenlabs.io")
    base = f"{relay.url}/api/elevenlabs"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    client = ElevenLabs(base_url=base, api_key="unused", headers=bearer)
    audio = b"".join(client.text_to_speech.convert(voice_id="v1", text="Hello"))
    assert audio == AUDIO
    got = upstream.only_request()
    assert got.header_all("xi-api-key") == [TEST_KEYS["ELEVENLABS_API_KEY"]]
    assert got.header("authorization") is None and TOKEN.encode() not in got.raw_head

    wrong = ElevenLabs(base_url=base, api_key=TOKEN)
    with pytest.raises(Exception) as error:
        b"".join(wrong.text_to_speech.convert(voice_id="v1", text="Hello"))
    assert getattr(error.value, "status_code", None) == 401
    body = str(getattr(error.value, "body", ""))
    assert "a credential came in xi-api-key, which keyrelay does not read" in body
    assert LOOKS in body and TOKEN not in body
