"""ElevenLabs text-to-speech over a WebSocket (`/v1/text-to-speech/{voice}/stream-input`): what a
client's messages cost. Pure.

Shapes as the `elevenlabs` SDK types them (`v_1_text_to_speech_voice_id_stream_input`): every
client message is a JSON object with a `text` string: `" "` first (`InitializeConnection`,
which may also carry a key in `xi-api-key` or `authorization`), then the text to speak
(`SendText`, with `flush` and `try_trigger_generation`), `""` last (`CloseConnection`). The
server answers `{"audio": ...}` chunks and a last `{"isFinal": true}`; an error is a
`{"message", "error", "code"}` object (the SDK's `TextToDialogueWebsocketError`: `code` is the
close code that follows) before the close, which the SDK raises as an `ApiError`.

ElevenLabs bills the characters of the text it is sent, at the model's `characters:` price
(per million): every `text` character is counted, the first message's space too.
"""

from __future__ import annotations

import json
from typing import Any

from addon.metering import messages

# Fields of the first message that carry a credential: the key is on the handshake, and a
# client's own (or keyrelay's token) has no business reaching ElevenLabs.
CREDENTIAL_FIELDS = ("xi-api-key", "xi_api_key", "authorization")
MAX_MESSAGE = 1 << 20  # a client message larger than this is not read (ElevenLabs' is smaller)


def message_of(content: bytes) -> dict[str, Any] | None:
    """A client message as ElevenLabs reads it: a JSON object whose `text`, when present, is a
    string; None for anything else (not forwarded: keyrelay would not know what it costs)."""
    data = messages.json_object(content, MAX_MESSAGE)
    if data is None or not isinstance(data.get("text", ""), str):
        return None
    return data


def characters(message: dict[str, Any]) -> int:
    """The characters a message is billed."""
    text = message.get("text", "")
    return len(text) if isinstance(text, str) else 0


def without_credentials(message: dict[str, Any]) -> bool:
    """Drop a credential the message carries; whether one was dropped."""
    found = [name for name in CREDENTIAL_FIELDS if name in message]
    for name in found:
        del message[name]
    return bool(found)


def error(code: str, text: str, close: int) -> bytes:
    """An error as ElevenLabs sends one before it closes."""
    return json.dumps({"message": text, "error": code, "code": close}).encode()
