"""A fake Gemini Live server (`BidiGenerateContent`, as @google/genai's live module types its
messages): a TLS WebSocket that bills each turn as Google does, from the tokens it reports.

- `setup`: the model and output cap (`generationConfig.maxOutputTokens`) taken;
  `setupComplete`.
- `clientContent`: its text joins the conversation (a token per character); with
  `turnComplete`, the model answers a turn.
- `realtimeInput`: its audio joins the conversation (a token per 100 bytes of base64); an
  `audioStreamEnd` makes the server start a turn of its own (voice activity).

A turn reads the whole conversation (text and audio, by modality) and makes `3 x` the last
text's length in audio tokens, at most its cap; it joins the conversation. It sends a
`serverContent` with audio, then `turnComplete` with its `usageMetadata` (for a turn the
server started, the usage comes in a message of its own after `turnComplete`). Every turn's
bill is recorded in USD (`bills`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from support.session_upstream import Send, SessionUpstream
from support.tls import TlsMaterial


@dataclass(frozen=True)
class LiveRates:
    """USD per million tokens."""

    text_in: float = 0.5
    audio_in: float = 3.0
    text_out: float = 2.0
    audio_out: float = 12.0

    def bill(self, text_in: int, audio_in: int, audio_out: int) -> float:
        return (
            text_in * self.text_in + audio_in * self.audio_in + audio_out * self.audio_out
        ) / 1e6

    def prices(self, model: str = "*") -> dict[str, Any]:
        """The same list as a keyrelay `prices:` entry."""
        return {
            "model": model,
            "input": self.text_in,
            "output": self.text_out,
            "audio_input": self.audio_in,
            "audio_output": self.audio_out,
        }


@dataclass
class _Conversation:
    model: str
    cap: int = 8192
    text: int = 0
    audio: int = 0
    last_text: str = ""


class GeminiLiveUpstream(SessionUpstream):
    def __init__(self, tls: TlsMaterial, rates: LiveRates = LiveRates()) -> None:
        super().__init__(tls)
        self.rates = rates
        self.bills: list[float] = []

    @property
    def billed(self) -> float:
        with self._lock:
            return sum(self.bills)

    def _message(self, session: dict[str, Any], got: dict[str, Any], send: Send) -> None:
        if "setup" in got:
            setup = got["setup"]
            conv = session["conversation"] = _Conversation(setup["model"])
            conv.cap = setup.get("generationConfig", {}).get("maxOutputTokens", conv.cap)
            send({"setupComplete": {}})
        elif "conversation" in session:
            self._said(session["conversation"], got, send)

    def _said(self, conv: _Conversation, got: dict[str, Any], send: Send) -> None:
        if "clientContent" in got:
            content = got["clientContent"]
            text = "".join(
                p.get("text", "") for turn in content.get("turns", []) for p in turn["parts"]
            )
            conv.text += len(text)
            conv.last_text = text or conv.last_text
            if content.get("turnComplete"):
                self._turn(conv, send, usage_apart=False)
        elif "realtimeInput" in got:
            given = got["realtimeInput"]
            conv.audio += len(given.get("audio", {}).get("data", "")) // 100
            if given.get("audioStreamEnd"):
                self._turn(conv, send, usage_apart=True)

    def _turn(self, conv: _Conversation, send: Send, *, usage_apart: bool) -> None:
        out = min(conv.cap, 3 * max(1, len(conv.last_text)))
        audio = base64.b64encode(b"\x00" * 64).decode()
        chunk = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}
        send({"serverContent": {"modelTurn": {"role": "model", "parts": [chunk]}}})
        usage = {
            "promptTokenCount": conv.text + conv.audio,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": conv.text},
                {"modality": "AUDIO", "tokenCount": conv.audio},
            ],
            "responseTokenCount": out,
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": out}],
            "totalTokenCount": conv.text + conv.audio + out,
        }
        with self._lock:
            self.bills.append(self.rates.bill(conv.text, conv.audio, out))
        done: dict[str, Any] = {"serverContent": {"turnComplete": True}}
        if usage_apart:
            send(done)
            send({"usageMetadata": usage})
        else:
            send({**done, "usageMetadata": usage})
        conv.audio += out  # the answer joins the conversation
