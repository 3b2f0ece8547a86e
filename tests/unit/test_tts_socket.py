"""ElevenLabs stream-input messages: what keyrelay reads, counts and strips."""

from __future__ import annotations

import json

import pytest

from addon.metering import tts_socket

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("content", "characters"),
    [
        (b'{"text": " ", "voice_settings": null}', 1),  # InitializeConnection
        (b'{"text": "Hello there. ", "try_trigger_generation": true}', 13),
        ('{"text": "h\\u00e9llo \U0001f600 "}'.encode(), 8),  # code points, as sent
        (b'{"text": ""}', 0),  # CloseConnection
        (b'{"flush": true}', 0),  # no text: nothing billed
    ],
)
def test_a_message_is_billed_the_characters_of_its_text(content: bytes, characters: int) -> None:
    message = tts_socket.message_of(content)
    assert message is not None
    assert tts_socket.characters(message) == characters


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b'{"text": ["a", "b"]}', b'{"text": 12}', b"\xff{}", b"{" * 3],
)
def test_what_is_not_a_message_with_a_text_string_is_unreadable(content: bytes) -> None:
    assert tts_socket.message_of(content) is None


def test_a_message_too_large_to_read_is_unreadable() -> None:
    content = json.dumps({"text": "x" * tts_socket.MAX_MESSAGE}).encode()
    assert tts_socket.message_of(content) is None


def test_a_credential_in_the_first_message_is_dropped() -> None:
    message = {"text": " ", "xi-api-key": "secret", "authorization": "Bearer t", "flush": False}
    assert tts_socket.without_credentials(message)
    assert message == {"text": " ", "flush": False}
    assert not tts_socket.without_credentials(message)


def test_an_error_has_elevenlabs_shape() -> None:
    error = json.loads(tts_socket.error("budget-exhausted", "no more", 4402))
    assert error == {"message": "no more", "error": "budget-exhausted", "code": 4402}
