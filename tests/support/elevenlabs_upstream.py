"""A fake ElevenLabs text-to-speech WebSocket (`/v1/text-to-speech/{voice}/stream-input`), as the
`elevenlabs` SDK's types spell its messages: a TLS WebSocket that bills every character of text it
is sent (the first message's space too) at its price per million characters, and answers each
text with an `{"audio": ...}` chunk; the last message (`{"text": ""}`) gets `{"isFinal": true}`
and a normal close, as ElevenLabs ends a stream."""

from __future__ import annotations

import base64
from typing import Any

from support.session_upstream import Ended, Send, SessionUpstream
from support.tls import TlsMaterial


class ElevenLabsUpstream(SessionUpstream):
    def __init__(self, tls: TlsMaterial, per_million: float) -> None:
        super().__init__(tls)
        self.per_million = per_million  # USD per million characters
        self.characters = 0  # billed

    @property
    def billed(self) -> float:
        with self._lock:
            return self.characters * self.per_million / 1e6

    def _message(self, session: dict[str, Any], got: dict[str, Any], send: Send) -> None:
        text = got["text"]
        with self._lock:
            self.characters += len(text)
        if text == "":
            send({"isFinal": True})
            raise Ended
        if text.strip():
            audio = base64.b64encode(b"ID3" + text.encode()).decode()
            send({"audio": audio, "isFinal": None, "normalizedAlignment": None})
