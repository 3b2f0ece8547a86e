"""The providers' own Python SDKs, unmodified, with keyrelay as their base URL."""

from __future__ import annotations

import email.parser
import email.policy
import time

import anthropic
import openai
import pytest
from elevenlabs.client import ElevenLabs
from support.proxy import KeyrelayProcess
from support.upstream import UpstreamServer

from clients.provider_fakes import (
    ANTHROPIC_DELTAS,
    AUDIO,
    OPENAI_DELTAS,
    anthropic_messages,
    anthropic_rate_limited,
    elevenlabs_tts,
    openai_chat_stream,
    openai_image_edit,
)

CLIENT_KEY = "sk-client-side-dummy"  # what an app puts in the SDK; keyrelay replaces it


def anthropic_client(kr: KeyrelayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{kr.url}/api/anthropic", api_key=CLIENT_KEY, max_retries=0, timeout=20
    )


def test_anthropic_messages_create(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    upstream.route("POST", "/v1/messages", anthropic_messages(), host="api.anthropic.com")
    message = anthropic_client(keyrelay).messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(ANTHROPIC_DELTAS)
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 6
    got = upstream.only_request()
    assert got.header("x-api-key") == TEST_KEYS["ANTHROPIC_API_KEY"]
    assert CLIENT_KEY.encode() not in got.raw_head
    sent = anthropic_client(keyrelay).default_headers["anthropic-version"]
    assert got.header("anthropic-version") == sent  # not pinned by keyrelay
    assert got.json()["model"] == "claude-haiku-4-5"


def test_anthropic_streaming_deltas_arrive_in_order(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    gap = 0.25
    upstream.route("POST", "/v1/messages", anthropic_messages(gap), host="api.anthropic.com")
    texts: list[str] = []
    arrived: list[float] = []
    start = time.monotonic()
    with anthropic_client(keyrelay).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello."}],
    ) as stream:
        for text in stream.text_stream:
            texts.append(text)
            arrived.append(time.monotonic() - start)
        final = stream.get_final_message()
    assert texts == list(ANTHROPIC_DELTAS)
    assert final.content[0].text == "".join(ANTHROPIC_DELTAS)
    assert final.stop_reason == "end_turn"
    # Not buffered: the first delta came long before the last (the events are `gap` apart).
    assert arrived[-1] - arrived[0] > (len(texts) - 1) * gap * 0.5


def test_anthropic_429_is_the_sdks_rate_limit_error(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", anthropic_rate_limited, host="api.anthropic.com")
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client(keyrelay).messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    error = caught.value
    assert error.status_code == 429
    assert error.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert error.response.headers["retry-after"] == "17"
    assert error.request_id == "req_01RateLimited"


def openai_client(kr: KeyrelayProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{kr.url}/api/openai", api_key=CLIENT_KEY, max_retries=0, timeout=20
    )


def test_openai_streaming_chat_completions(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    upstream.route("POST", "/v1/chat/completions", openai_chat_stream, host="api.openai.com")
    stream = openai_client(keyrelay).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream please."}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(OPENAI_DELTAS)
    assert chunks[-1].choices[0].finish_reason == "stop"
    got = upstream.only_request()
    assert got.header("authorization") == f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"
    assert got.json()["stream"] is True


def test_openai_multipart_images_edit(keyrelay: KeyrelayProcess, upstream: UpstreamServer) -> None:
    upstream.route("POST", "/v1/images/edits", openai_image_edit, host="api.openai.com")
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    result = openai_client(keyrelay).images.edit(
        model="gpt-image-1",
        image=("input.png", image, "image/png"),
        prompt="Add a keyrelay logo",
    )
    assert result.data and result.data[0].b64_json == "aGVsbG8gaW1hZ2U="
    got = upstream.only_request()
    content_type = got.header("content-type") or ""
    assert content_type.startswith("multipart/form-data; boundary=")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + got.body
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert parts["prompt"].get_content() == "Add a keyrelay logo"
    assert parts["model"].get_content() == "gpt-image-1"
    assert parts["image"].get_content() == image  # byte for byte through keyrelay
    assert parts["image"].get_filename() == "input.png"


def test_elevenlabs_text_to_speech_returns_the_exact_audio(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer, TEST_KEYS: dict[str, str]
) -> None:
    upstream.route("POST", "/v1/text-to-speech/", elevenlabs_tts, host="api.elevenlabs.io")
    client = ElevenLabs(base_url=f"{keyrelay.url}/api/elevenlabs", api_key=CLIENT_KEY)
    audio = b"".join(
        client.text_to_speech.convert(
            "JBFqnCBsd6RMkjVDRZzb",
            text="Hello from keyrelay.",
            model_id="eleven_multilingual_v2",
            output_format="mp3_44100_128",
        )
    )
    assert audio == AUDIO
    got = upstream.only_request()
    assert got.target == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb?output_format=mp3_44100_128"
    assert got.header("xi-api-key") == TEST_KEYS["ELEVENLABS_API_KEY"]
    assert got.json()["text"] == "Hello from keyrelay."
