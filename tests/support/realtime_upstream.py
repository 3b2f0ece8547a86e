"""A fake OpenAI Realtime server (GA interface, as the `openai` SDK's realtime types spell it):
a TLS WebSocket that speaks the documented events and bills each response as OpenAI does, from
the tokens it reports and its own price list.

- On connect: `session.created` (output cap `inf`, server voice activity detection on).
- `session.update`: the model and output cap taken; `session.updated` with the session.
- `conversation.item.create`: the item's text joins the conversation; `conversation.item.created`.
- `input_audio_buffer.append` / `commit`: audio joins the conversation (a token per 100 bytes
  of base64); with voice activity detection on, a commit starts a response of the server's own.
- `response.create`: a response, `response.created`, deltas, `response.done`.

A response reads the whole conversation as input (text and audio tokens; what earlier
responses read is cached, OpenAI's prompt cache) and makes `3 x` the last text's length in
output tokens, at most its cap, a third text and the rest audio; it joins the conversation.
Every response's bill is recorded in USD (`bills`), computed here from the usage it reports.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, Request, TextMessage

from support.tls import TlsMaterial
from support.transport import WebSocketUpstream


@dataclass(frozen=True)
class Rates:
    """USD per million tokens, as OpenAI lists gpt-realtime's."""

    text_in: float = 4.0
    text_cached: float = 0.4
    audio_in: float = 32.0
    audio_cached: float = 0.4
    text_out: float = 16.0
    audio_out: float = 64.0

    def bill(self, usage: dict[str, Any]) -> float:
        inputs, outputs = usage["input_token_details"], usage["output_token_details"]
        cached = inputs["cached_tokens_details"]
        per_million = (
            (inputs["text_tokens"] - cached["text_tokens"]) * self.text_in
            + cached["text_tokens"] * self.text_cached
            + (inputs["audio_tokens"] - cached["audio_tokens"]) * self.audio_in
            + cached["audio_tokens"] * self.audio_cached
            + outputs["text_tokens"] * self.text_out
            + outputs["audio_tokens"] * self.audio_out
        )
        return per_million / 1e6

    def prices(self, model: str = "*") -> dict[str, Any]:
        """The same list as a keyrelay `prices:` entry."""
        return {
            "model": model,
            "input": self.text_in,
            "cache_read": self.text_cached,
            "output": self.text_out,
            "audio_input": self.audio_in,
            "audio_cache_read": self.audio_cached,
            "audio_output": self.audio_out,
        }


@dataclass
class _Conversation:
    model: str
    cap: int | str = "inf"
    vad: bool = True
    text: int = 0  # tokens of text in the conversation
    audio: int = 0  # tokens of audio
    cached_text: int = 0  # read by an earlier response: cached
    cached_audio: int = 0
    last_text: str = ""
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class RealtimeUpstream(WebSocketUpstream):
    def __init__(self, tls: TlsMaterial, rates: Rates = Rates()) -> None:
        super().__init__(tls)
        self.rates = rates
        self.received: list[dict[str, Any]] = []  # every client event, in order
        self.bills: list[float] = []  # USD per response made
        self.closes: list[tuple[int, str]] = []  # close frames received
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
        parts: list[str] = []  # a message's frames so far

        def send(event: dict[str, Any]) -> None:
            sock.sendall(ws.send(Message(data=json.dumps(event))))

        for event in self.events(sock, ws):
            if isinstance(event, Request):
                model = event.target.partition("model=")[2].partition("&")[0]
                conv = _Conversation(model)
                send({"type": "session.created", "event_id": "e0", "session": _shown(conv)})
            elif isinstance(event, TextMessage) and conv is not None:
                parts.append(event.data)
                if not event.message_finished:
                    continue
                got = json.loads("".join(parts))
                parts.clear()
                self.received.append(got)
                self._event(conv, got, send)
            elif isinstance(event, CloseConnection):
                self.closes.append((event.code, event.reason))
                if ws.state.name == "REMOTE_CLOSING":
                    sock.sendall(ws.send(event.response()))
                return

    def _event(self, conv: _Conversation, got: dict[str, Any], send: Any) -> None:
        kind = got["type"]
        if kind == "session.update":
            session = got["session"]
            conv.model = session.get("model", conv.model)
            conv.cap = session.get("max_output_tokens", conv.cap)
            if "turn_detection" in session.get("audio", {}).get("input", {}):
                conv.vad = session["audio"]["input"]["turn_detection"] is not None
            send({"type": "session.updated", "event_id": "e1", "session": _shown(conv)})
        elif kind == "conversation.item.create":
            text = "".join(c.get("text", "") for c in got["item"].get("content", []))
            conv.text += len(text)
            conv.last_text = text
            send({"type": "conversation.item.created", "event_id": "e2", "item": got["item"]})
        elif kind == "input_audio_buffer.append":
            conv.audio += len(got["audio"]) // 100
        elif kind == "input_audio_buffer.commit":
            send({"type": "input_audio_buffer.committed", "event_id": "e3", "item_id": "i1"})
            if conv.vad:
                self._respond(conv, {}, send)
        elif kind == "response.create":
            self._respond(conv, got.get("response") or {}, send)

    def _respond(self, conv: _Conversation, config: dict[str, Any], send: Any) -> None:
        rid = f"resp_{next(conv.ids)}"
        cap = config.get("max_output_tokens", conv.cap)
        limit = cap if isinstance(cap, int) else 4096
        response = {"id": rid, "object": "realtime.response", "status": "in_progress"}
        send({"type": "response.created", "event_id": "e4", "response": response})
        out = min(limit, 3 * max(1, len(conv.last_text)))
        text_out = out // 3
        audio_out = out - text_out
        send({"type": "response.output_text.delta", "event_id": "e5", "delta": "hi"})
        usage = {
            "total_tokens": conv.text + conv.audio + out,
            "input_tokens": conv.text + conv.audio,
            "output_tokens": out,
            "input_token_details": {
                "text_tokens": conv.text,
                "audio_tokens": conv.audio,
                "image_tokens": 0,
                "cached_tokens": conv.cached_text + conv.cached_audio,
                "cached_tokens_details": {
                    "text_tokens": conv.cached_text,
                    "audio_tokens": conv.cached_audio,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        with self._lock:
            self.bills.append(self.rates.bill(usage))
        done = {**response, "status": "completed", "usage": usage}
        send({"type": "response.done", "event_id": "e6", "response": done})
        conv.cached_text, conv.cached_audio = conv.text, conv.audio
        conv.text += text_out  # the answer joins the conversation
        conv.audio += audio_out


def _shown(conv: _Conversation) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": conv.model,
        "max_output_tokens": conv.cap,
        "output_modalities": ["audio"],
    }
