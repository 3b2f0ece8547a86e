"""A WebSocket on a path-prefix route: routed, the key injected on the handshake, messages both
ways (ElevenLabs' stream-input, which a browser cannot add headers to)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from conftest import KeyrelayFactory
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.tls import TlsMaterial
from support.transport import WebSocketUpstream
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
    origin = [(b"origin", b"http://localhost")]  # a page served beside keyrelay
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


def test_a_websocket_from_a_disallowed_origin_is_refused(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    """CORS does not cover WebSockets: without this check any site could use the key."""
    relay = keyrelay_factory(upstream_port=ws_upstream.port)
    target = "/api/elevenlabs/v1/text-to-speech/voice1/stream-input"
    site = [(b"origin", b"https://evil.test"), (b"sec-fetch-site", b"cross-site")]
    with _handshake(relay.port, target, site) as (_sock, _ws, refused):
        assert isinstance(refused, RejectConnection)
        assert refused.status_code == 403
    assert ws_upstream.handshakes == []


def test_websocket_to_an_unknown_route_is_refused(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    relay = keyrelay_factory(upstream_port=ws_upstream.port)
    with _handshake(relay.port, "/api/nowhere/stream") as (_sock, _ws, refused):
        assert isinstance(refused, RejectConnection)
        assert refused.status_code == 404
    assert ws_upstream.handshakes == []


def _elevenlabs_rules(**sections: object) -> str:
    provider = {
        "match": {"prefix": "/api/elevenlabs"},
        "upstream": "https://api.elevenlabs.io",
        "credential": {"header": "xi-api-key", "key": {"env": "ELEVENLABS_API_KEY"}},
        **sections,
    }
    return yaml.safe_dump({"providers": {"elevenlabs": provider}})


STREAM_INPUT = "/api/elevenlabs/v1/text-to-speech/voice1/stream-input"


def _status(answer: Event) -> int:
    return 101 if isinstance(answer, AcceptConnection) else getattr(answer, "status_code", 0)


def _handshake_status_until(port: int, wanted: int) -> list[int]:
    """Handshakes (each closed at once) until one answers `wanted`: a slot is given back just
    after the socket closed, not at the same instant."""
    statuses: list[int] = []
    for _ in range(100):
        with _handshake(port, STREAM_INPUT) as (sock, ws, answer):
            statuses.append(_status(answer))
            if isinstance(answer, AcceptConnection):
                sock.sendall(ws.send(CloseConnection(code=1000)))
                _next_event(sock, ws)
        if statuses[-1] == wanted:
            break
        time.sleep(0.02)
    return statuses


def test_an_open_websocket_holds_its_concurrency_slot_until_it_closes(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    relay = keyrelay_factory(
        _elevenlabs_rules(limits={"concurrent": 1}), upstream_port=ws_upstream.port
    )
    with _handshake(relay.port, STREAM_INPUT) as (sock, ws, first):
        assert isinstance(first, AcceptConnection), first
        # mitmproxy runs the response hook on the 101: the slot must outlive it.
        others = []
        for _ in range(3):
            with _handshake(relay.port, STREAM_INPUT) as (_s, _w, answer):
                others.append(_status(answer))
        assert others == [429, 429, 429]
        sock.sendall(ws.send(Message(data="still open")))
        assert isinstance(_next_event(sock, ws), TextMessage)
        sock.sendall(ws.send(CloseConnection(code=1000)))
        assert isinstance(_next_event(sock, ws), CloseConnection)
    # Closed: websocket_end gives the slot back.
    assert _handshake_status_until(relay.port, 101)[-1] == 101
    assert len(ws_upstream.handshakes) == 2


def test_an_idle_websocket_is_closed_and_frees_its_slot(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    relay = keyrelay_factory(
        _elevenlabs_rules(limits={"concurrent": 1}, transport={"timeouts": {"idle": 1}}),
        upstream_port=ws_upstream.port,
    )
    with _handshake(relay.port, STREAM_INPUT) as (sock, ws, accepted):
        assert isinstance(accepted, AcceptConnection), accepted
        started = time.monotonic()
        sock.sendall(ws.send(Message(data="one")))  # activity either way resets the clock
        assert isinstance(_next_event(sock, ws), TextMessage)
        # The upstream itself gives up after 5 s of silence; keyrelay's idle limit is 1 s.
        closed = _next_event(sock, ws)
        assert isinstance(closed, CloseConnection), closed
        assert time.monotonic() - started < 4
    relay.wait_for_output("no WebSocket message either way for 1s")
    assert _handshake_status_until(relay.port, 101)[-1] == 101


KEY = TEST_KEYS["ELEVENLABS_API_KEY"]


def _saving(factory: KeyrelayFactory, upstream: WebSocketUpstream, saved: Path) -> KeyrelayProcess:
    """keyrelay saving its flows to `saved` (-w): written at a WebSocket's end or at shutdown."""
    return factory(upstream_port=upstream.port, extra_args=["-w", str(saved)])


def test_websocket_messages_echoing_a_key_are_masked_in_saved_flows(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream, tmp_path: Path
) -> None:
    key, saved = KEY, tmp_path / "flows"
    relay = _saving(keyrelay_factory, ws_upstream, saved)
    with _handshake(relay.port, STREAM_INPUT) as (sock, ws, accepted):
        assert isinstance(accepted, AcceptConnection)
        sock.sendall(ws.send(Message(data=f"the key is {key}")))
        echoed = _next_event(sock, ws)  # echoed back by the upstream: masked on its way
        assert isinstance(echoed, TextMessage)
        assert echoed.data == "echo: the key is <ELEVENLABS_API_KEY>"
        sock.sendall(ws.send(Message(data=f"{key}"[:-1].encode() + b"\xff")))
        near_miss = _next_event(sock, ws)  # binary, reversed: not the key, left alone
        assert isinstance(near_miss, BytesMessage)
        assert bytes(near_miss.data) == (f"{key}"[:-1].encode() + b"\xff")[::-1]
        sock.sendall(ws.send(CloseConnection(code=1000)))
        assert isinstance(_next_event(sock, ws), CloseConnection)
    relay.stop()
    data = saved.read_bytes()
    assert b"the key is" in data
    assert key.encode() not in data


def test_a_websocket_open_at_shutdown_is_saved_masked(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream, tmp_path: Path
) -> None:
    saved = tmp_path / "flows"
    relay = _saving(keyrelay_factory, ws_upstream, saved)
    with _handshake(relay.port, STREAM_INPUT) as (sock, ws, accepted):
        assert isinstance(accepted, AcceptConnection)
        sock.sendall(ws.send(Message(data=f"sent while open: {KEY}")))
        assert isinstance(_next_event(sock, ws), TextMessage)
        relay.stop()  # the socket is still open: Save writes the flow at `done`
    data = saved.read_bytes()
    assert b"sent while open" in data
    assert KEY.encode() not in data


def test_a_websocket_is_held_to_models_and_rates(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream
) -> None:
    """A WebSocket's messages are never checked: its URL must name an allowed model, and each
    handshake counts against the rate like any request."""
    relay = keyrelay_factory(
        _elevenlabs_rules(validation={"models": ["eleven_flash_*"]}, limits={"rate": "3/minute"}),
        upstream_port=ws_upstream.port,
    )
    statuses = []
    for query in ("model_id=eleven_v3", "", "model=a&model=b"):
        with _handshake(relay.port, f"{STREAM_INPUT}?{query}") as (_s, _w, answer):
            statuses.append(_status(answer))
    assert statuses == [403, 403, 400]
    assert ws_upstream.handshakes == []
    allowed = f"{STREAM_INPUT}?model_id=eleven_flash_v2_5"
    for _ in range(4):
        with _handshake(relay.port, allowed) as (sock, ws, answer):
            statuses.append(_status(answer))
            if isinstance(answer, AcceptConnection):
                sock.sendall(ws.send(CloseConnection(code=1000)))
                _next_event(sock, ws)
    assert statuses[3:] == [101, 101, 101, 429]
    assert len(ws_upstream.handshakes) == 3


def test_a_browser_websocket_presents_its_credential_as_a_subprotocol(
    keyrelay_factory: KeyrelayFactory, ws_upstream: WebSocketUpstream, tmp_path: Path
) -> None:
    """A browser cannot set headers on a WebSocket. Its credential comes as a subprotocol;
    it never goes upstream, is never saved, and the client gets a protocol it offered."""
    token, saved = "ws-browser-token-4411", tmp_path / "flows"
    tokens = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}
    relay = keyrelay_factory(
        _elevenlabs_rules(auth=tokens),
        env={"KR_TOKENS": token_entry("alice", token)},
        upstream_port=ws_upstream.port,
        extra_args=["-w", str(saved)],
    )

    def opened(*offer: str) -> Event:
        ws = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            request = Request(host="localhost", target=STREAM_INPUT, subprotocols=list(offer))
            sock.sendall(ws.send(request))
            answer = _next_event(sock, ws)
            if isinstance(answer, AcceptConnection):
                sock.sendall(ws.send(CloseConnection(code=1000)))
                _next_event(sock, ws)
            return answer

    ours = opened("keyrelay", f"keyrelay-token.{token}")
    assert isinstance(ours, AcceptConnection) and ours.subprotocol == "keyrelay"
    openai_sdk = opened("realtime", f"openai-insecure-api-key.{token}")
    assert isinstance(openai_sdk, AcceptConnection)  # the upstream chose none: wsproto allows it
    wrong = opened("keyrelay", "keyrelay-token.not-the-token")
    assert isinstance(wrong, RejectConnection) and wrong.status_code == 401
    [(_, first), (_, second)] = ws_upstream.handshakes
    assert "sec-websocket-protocol" not in first  # nothing but keyrelay's own was offered
    assert second["sec-websocket-protocol"] == "realtime"
    assert first["xi-api-key"] == second["xi-api-key"] == TEST_KEYS["ELEVENLABS_API_KEY"]
    relay.stop()
    assert token.encode() not in saved.read_bytes()
