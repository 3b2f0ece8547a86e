"""ElevenLabs text-to-speech over a WebSocket (`stream-input`) metered through the real mitmdump,
driven by the `elevenlabs` SDK's own WebSocket client (`text_to_speech.convert_realtime`) with
keyrelay's token: the books move by the characters the fake billed, a budget that runs out ends
the session at the message it cannot cover (ElevenLabs' error shape, close 4402), a model the
rules forbid or do not price is refused at the handshake, and the key never reaches the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import KeyrelayFactory
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError
from support import session_books
from support.elevenlabs_upstream import ElevenLabsUpstream
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.tls import TlsMaterial
from websockets.exceptions import InvalidStatus

ALICE = "alice-tts-token-9c1d"
KEY = TEST_KEYS["ELEVENLABS_API_KEY"]
MODEL = "eleven_flash_v2_5"
PER_MILLION = 1000.0  # USD per million characters: a character costs $0.001
CHUNK = "abcdefghij. "  # 12 characters, a sentence the SDK's chunker sends whole


def rules(*, daily: float, redis: str | None = None) -> str:
    provider = {
        "profile": "elevenlabs",
        "prices": [{"model": "eleven_flash*", "characters": PER_MILLION}],
        "validation": {"models": ["eleven_flash*", "eleven_turbo*"]},
    }
    # The SDK sends its api_key as ElevenLabs' header: keyrelay's token, read there.
    return session_books.rules(
        "elevenlabs", provider, daily=daily, redis=redis, header="xi-api-key"
    )


@pytest.fixture(params=["memory", "redis"])
def books(request: pytest.FixtureRequest) -> Iterator[str | None]:
    with session_books.kept_in(request.param) as url:
        yield url


@pytest.fixture
def elevenlabs(test_ca: TlsMaterial) -> Iterator[ElevenLabsUpstream]:
    with ElevenLabsUpstream(test_ca, PER_MILLION) as server:
        yield server


def start(
    factory: KeyrelayFactory,
    upstream: ElevenLabsUpstream,
    daily: float,
    redis: str | None = None,
    log: Path | None = None,
) -> KeyrelayProcess:
    logged = ["--set", "keyrelay_access_log=json", "--set", f"keyrelay_access_log_file={log}"]
    return factory(
        rules(daily=daily, redis=redis),
        env={"KR_TOKENS": token_entry("alice", ALICE)},
        upstream_port=upstream.port,
        extra_args=logged if log else (),
    )


def speak(relay: KeyrelayProcess, texts: list[str], model: str = MODEL) -> list[bytes]:
    """The SDK's realtime text to speech through keyrelay: the audio chunks it yields."""
    client = ElevenLabs(api_key=ALICE, base_url=f"http://127.0.0.1:{relay.port}/api/elevenlabs")
    tts = client.text_to_speech
    # The SDK always makes the WebSocket's URL wss://; keyrelay listens in plain HTTP here.
    tts._ws_base_url = f"ws://127.0.0.1:{relay.port}/api/elevenlabs"
    return list(tts.convert_realtime(voice_id="voice1", text=iter(texts), model_id=model))


def spent(relay: KeyrelayProcess, until: float | None = None) -> dict[str, Any]:
    return session_books.spent(relay.port, ("xi-api-key", ALICE), until)


def test_a_session_is_metered_by_the_characters_the_fake_billed(
    keyrelay_factory: KeyrelayFactory, elevenlabs: ElevenLabsUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    relay = start(keyrelay_factory, elevenlabs, daily=50.0, log=log)
    audio = speak(relay, ["Hello there. ", "How are you today? ", "Fine, thanks."])
    assert audio and all(chunk.startswith(b"ID3") for chunk in audio)
    sent = "".join(m["text"] for m in elevenlabs.received)
    assert "How are you today?" in sent
    assert elevenlabs.characters == len(sent) > 0
    books = spent(relay, until=elevenlabs.billed)
    assert books["spent"] == pytest.approx(elevenlabs.billed, abs=1e-9)
    assert books["reserved"] == 0
    [(target, headers)] = elevenlabs.handshakes
    assert target.startswith(f"/v1/text-to-speech/voice1/stream-input?model_id={MODEL}")
    assert headers["xi-api-key"] == KEY
    assert ALICE not in json.dumps(headers) + json.dumps(elevenlabs.received)
    assert KEY not in relay.output()
    # The access log: the handshake's line at the 101, the session's at its end, with its cost.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    handshake, ended = [line for line in lines if line["path"].endswith("/stream-input")]
    assert handshake["status"] == ended["status"] == 101
    assert "cost" not in handshake
    assert ended["usage"] == {"characters": elevenlabs.characters}
    assert ended["cost"] == pytest.approx(elevenlabs.billed, abs=1e-9)
    assert ended["model"] == MODEL
    assert KEY not in log.read_text() and ALICE not in log.read_text()


def test_a_budget_that_runs_out_ends_the_session_at_the_message_it_cannot_cover(
    keyrelay_factory: KeyrelayFactory, elevenlabs: ElevenLabsUpstream, books: str | None
) -> None:
    # The session holds 1 character from its open; the first message is a space, then 12 each:
    # 1 + 1 + 3 x 12 = 38 characters fit in $0.045, a fourth sentence (50) does not.
    relay = start(keyrelay_factory, elevenlabs, daily=0.045, redis=books)
    with pytest.raises(ApiError) as ended:
        speak(relay, [CHUNK] * 6)
    assert ended.value.status_code == 4402
    assert "budget" in str(ended.value.body)  # ElevenLabs' error, or the close's reason
    assert session_books.closes(elevenlabs) == [4402]  # the upstream's session ends too
    assert [m["text"] for m in elevenlabs.received] == [" ", CHUNK, CHUNK, CHUNK]
    assert elevenlabs.characters == 37
    day = spent(relay, until=elevenlabs.billed)
    assert day["spent"] == pytest.approx(0.037, abs=1e-9)
    assert day["spent"] == pytest.approx(elevenlabs.billed, abs=1e-9)
    assert day["reserved"] == 0


@pytest.mark.parametrize(
    ("model", "status", "problem"),
    [
        ("eleven_multilingual_v2", 403, "model-not-allowed"),  # not in models:
        ("eleven_turbo_v2_5", 403, "unpriced"),  # allowed, but has no price
    ],
)
def test_a_model_the_rules_refuse_or_cannot_price_is_refused_at_the_handshake(
    keyrelay_factory: KeyrelayFactory,
    elevenlabs: ElevenLabsUpstream,
    model: str,
    status: int,
    problem: str,
) -> None:
    relay = start(keyrelay_factory, elevenlabs, daily=50.0)
    with pytest.raises(InvalidStatus) as refused:
        speak(relay, [CHUNK], model=model)
    assert refused.value.response.status_code == status
    assert json.loads(refused.value.response.body)["type"].endswith("/" + problem)
    assert elevenlabs.handshakes == []


def test_a_budget_that_cannot_cover_a_character_refuses_the_handshake(
    keyrelay_factory: KeyrelayFactory, elevenlabs: ElevenLabsUpstream
) -> None:
    relay = start(keyrelay_factory, elevenlabs, daily=0.0005)  # half a character
    with pytest.raises(InvalidStatus) as refused:
        speak(relay, [CHUNK])
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body)["type"].endswith("/budget-exhausted")
    assert elevenlabs.handshakes == []
