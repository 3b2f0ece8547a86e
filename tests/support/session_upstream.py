"""The base of the fake upstreams that hold a session over a TLS WebSocket and speak JSON
messages (Gemini Live, ElevenLabs stream-input): each whole text message read as JSON and
handed to `_message`, the close frames the client sent recorded, bills kept under a lock."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, TextMessage

from support.tls import TlsMaterial
from support.transport import JsonMessages, WebSocketUpstream

Send = Callable[[dict[str, Any]], None]


class Ended(Exception):
    """Raised by `_message` to end the session from the server's side (a normal close)."""


class SessionUpstream(WebSocketUpstream):
    def __init__(self, tls: TlsMaterial) -> None:
        super().__init__(tls)
        self.received: list[dict[str, Any]] = []  # every client message, in order
        self.closes: list[tuple[int, str]] = []  # close frames received
        self._lock = threading.Lock()

    def _message(self, session: dict[str, Any], got: dict[str, Any], send: Send) -> None:
        raise NotImplementedError

    timeout = 10.0

    def _handle(self, sock: ssl.SSLSocket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        messages = JsonMessages()
        session: dict[str, Any] = {}  # what a subclass keeps for one connection

        def send(message: dict[str, Any]) -> None:
            sock.sendall(ws.send(Message(data=json.dumps(message))))

        for event in self.events(sock, ws):
            if isinstance(event, TextMessage) and (got := messages.add(event)) is not None:
                self.received.append(got)
                try:
                    self._message(session, got, send)
                except Ended:
                    sock.sendall(ws.send(CloseConnection(code=1000)))
                    return
            elif isinstance(event, CloseConnection):
                self.closes.append((event.code, event.reason))
                if ws.state.name == "REMOTE_CLOSING":
                    sock.sendall(ws.send(event.response()))
                return
