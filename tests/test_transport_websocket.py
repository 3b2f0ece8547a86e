"""A WebSocket on a path-prefix route: routed, the key injected on the handshake, messages both
ways (ElevenLabs' stream-input, which a browser cannot add headers to)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence

import pytest
from conftest import KeyrelayFactory
from support.proxy import TEST_KEYS
from support.tls import TlsMaterial
from transport_support import WebSocketUpstream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)


@pytest.fixture
def ws_upstream(test_ca: TlsMaterial) -> Iterator[WebSocketUpstream]:
    with WebSocketUpstream(test_ca) as server:
        yield server


def _next_event(sock: socket.socket, ws: WSConnection) -> Event:
    while True:
        for event in ws.events():
            return event
        data = sock.recv(65536)
        assert data, "keyrelay closed the WebSocket"
        ws.receive_data(data)


@contextlib.contextmanager
def _handshake(
    port: int, target: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Iterator[tuple[socket.socket, WSConnection, Event]]:
    """Open a WebSocket through keyrelay: the socket, the connection and its answer."""
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(ws.send(Request(host="localhost", target=target, extra_headers=list(headers))))
        yield sock, ws, _next_event(sock, ws)


def test_websocket_is_routed_with_the_key_and_echoes_both_ways(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    relay = keyrelay_factory(upstream_port=ws_upstream.port)
    target = "/api/elevenlabs/v1/text-to-speech/voice1/stream-input?model_id=m"
    origin = [(b"origin", b"http://localhost:3000")]
    with _handshake(relay.port, target, origin) as (sock, ws, accepted):
        assert isinstance(accepted, AcceptConnection), accepted
        sock.sendall(ws.send(Message(data='{"text": "hello "}')))
        reply = _next_event(sock, ws)
        assert isinstance(reply, TextMessage)
        assert reply.data == 'echo: {"text": "hello "}'
        sock.sendall(ws.send(Message(data=b"\x00\x01\x02\xff")))
        binary = _next_event(sock, ws)
        assert isinstance(binary, BytesMessage)
        assert bytes(binary.data) == b"\xff\x02\x01\x00"
        sock.sendall(ws.send(CloseConnection(code=1000)))
        assert isinstance(_next_event(sock, ws), CloseConnection)

    [(target, headers)] = ws_upstream.handshakes
    assert target == "/v1/text-to-speech/voice1/stream-input?model_id=m"
    assert headers["xi-api-key"] == TEST_KEYS["ELEVENLABS_API_KEY"]
    assert headers["host"] == "api.elevenlabs.io"
    assert "origin" not in headers  # browser context stays behind, as for plain requests


def test_websocket_to_an_unknown_route_is_refused(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    relay = keyrelay_factory(upstream_port=ws_upstream.port)
    with _handshake(relay.port, "/api/nowhere/stream") as (_sock, _ws, refused):
        assert isinstance(refused, RejectConnection)
        assert refused.status_code == 404
    assert ws_upstream.handshakes == []
