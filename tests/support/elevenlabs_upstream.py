"""A fake ElevenLabs text-to-speech WebSocket (`/v1/text-to-speech/{voice}/stream-input`), as the
`elevenlabs` SDK's types spell its messages: a TLS WebSocket that bills every character of text it
is sent (the first message's space too) at its price per million characters, and answers each
text with an `{"audio": ...}` chunk; the last message (`{"text": ""}`) gets `{"isFinal": true}`
and a normal close, as ElevenLabs ends a stream."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, TextMessage

from support.tls import TlsMaterial
from support.transport import WebSocketUpstream


class ElevenLabsUpstream(WebSocketUpstream):
    def __init__(self, tls: TlsMaterial, per_million: float) -> None:
        super().__init__(tls)
        self.per_million = per_million  # USD per million characters
        self.received: list[dict[str, Any]] = []  # every client message, in order
        self.characters = 0  # billed
        self.closes: list[tuple[int, str]] = []  # close frames received
        self._lock = threading.Lock()

    @property
    def billed(self) -> float:
        with self._lock:
            return self.characters * self.per_million / 1e6

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self._ctx.wrap_socket(raw, server_side=True) as sock:
                sock.settimeout(10)
                self._session(sock)
        except (OSError, ssl.SSLError):
            return

    def _session(self, sock: ssl.SSLSocket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
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
                text = got["text"]
                with self._lock:
                    self.characters += len(text)
                if text == "":
                    send({"isFinal": True})
                    sock.sendall(ws.send(CloseConnection(code=1000)))
                    return
                if text.strip():
                    audio = base64.b64encode(b"ID3" + text.encode()).decode()
                    send({"audio": audio, "isFinal": None, "normalizedAlignment": None})
            elif isinstance(event, CloseConnection):
                self.closes.append((event.code, event.reason))
                if ws.state.name == "REMOTE_CLOSING":
                    sock.sendall(ws.send(event.response()))
                return
