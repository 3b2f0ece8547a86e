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
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, TextMessage

from support.tls import TlsMaterial
from support.transport import WebSocketUpstream


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


class GeminiLiveUpstream(WebSocketUpstream):
    def __init__(self, tls: TlsMaterial, rates: LiveRates = LiveRates()) -> None:
        super().__init__(tls)
        self.rates = rates
        self.received: list[dict[str, Any]] = []  # every client message, in order
        self.bills: list[float] = []
        self.closes: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    @property
    def billed(self) -> float:
        with self._lock:
            return sum(self.bills)

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self._ctx.wrap_socket(raw, server_side=True) as sock:
                sock.settimeout(10)
                self._session(sock)
        except (OSError, ssl.SSLError):
            return

    def _session(self, sock: ssl.SSLSocket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        conv: _Conversation | None = None
        parts: list[str] = []

        def send(message: dict[str, Any]) -> None:
            sock.sendall(ws.send(Message(data=json.dumps(message))))

        for event in self.events(sock, ws):
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if not event.message_finished:
                    continue
                got = json.loads("".join(parts))
                parts.clear()
                self.received.append(got)
                if "setup" in got:
                    setup = got["setup"]
                    conv = _Conversation(setup["model"])
                    conv.cap = setup.get("generationConfig", {}).get("maxOutputTokens", conv.cap)
                    send({"setupComplete": {}})
                elif conv is not None:
                    self._message(conv, got, send)
            elif isinstance(event, CloseConnection):
                self.closes.append((event.code, event.reason))
                if ws.state.name == "REMOTE_CLOSING":
                    sock.sendall(ws.send(event.response()))
                return

    def _message(self, conv: _Conversation, got: dict[str, Any], send: Any) -> None:
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

    def _turn(self, conv: _Conversation, send: Any, *, usage_apart: bool) -> None:
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
