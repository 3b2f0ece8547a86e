"""What the transport tests need beyond tests/support: compressors that flush per chunk (as a
streaming server does), a WebSocket upstream, rules with a transport section, and process memory."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import brotli
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import yaml
import zstandard
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Request,
    TextMessage,
)

from support.proxy import DEFAULT_RULES
from support.tls import TlsMaterial

Compressor = Callable[[list[bytes]], list[bytes]]


def _zlib_pieces(wbits: int) -> Compressor:
    def compress(pieces: list[bytes]) -> list[bytes]:
        c = zlib.compressobj(wbits=wbits)
        out = [c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
        out[-1] += c.flush()
        return out

    return compress


def _brotli_pieces(pieces: list[bytes]) -> list[bytes]:
    c = brotli.Compressor()
    out = [c.process(p) + c.flush() for p in pieces]
    out[-1] += c.finish()
    return out


def _zstd_pieces(pieces: list[bytes]) -> list[bytes]:
    c = zstandard.ZstdCompressor().compressobj()
    out = [c.compress(p) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for p in pieces]
    out[-1] += c.flush()
    return out


# Each content-coding: pieces of plain bytes -> one compressed wire chunk per piece, every chunk
# decodable on its own arrival (sync-flushed), as servers that stream compressed do.
COMPRESSORS: dict[str, Compressor] = {
    "gzip": _zlib_pieces(16 + zlib.MAX_WBITS),
    "deflate": _zlib_pieces(zlib.MAX_WBITS),
    "br": _brotli_pieces,
    "zstd": _zstd_pieces,
}


def rules_with_transport(transport: dict[str, object], text: str | None = None) -> str:
    """The repo's rules (or `text`) with a `transport:` section under defaults (every provider
    inherits)."""
    rules = yaml.safe_load(Path(DEFAULT_RULES).read_text() if text is None else text)
    rules.setdefault("defaults", {})["transport"] = transport
    return yaml.safe_dump(rules, sort_keys=False)


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class _TlsServer:
    """A thread per connection on 127.0.0.1, TLS with the test CA's server certificate."""

    def __init__(self, tls: TlsMaterial, alpn: tuple[str, ...]) -> None:
        self._ctx = tls.server_context(alpn=alpn)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> Self:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept.join(5)
        self._listener.close()
        for t in self._threads:
            t.join(5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raise NotImplementedError


class JsonMessages:
    """A WebSocket's JSON text messages, whole: a message sent in several frames is parsed once
    its last frame is in."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def add(self, event: TextMessage) -> Any:
        """The message `event` completes, parsed; None while frames are still to come."""
        self._parts.append(event.data)
        if not event.message_finished:
            return None
        whole = "".join(self._parts)
        self._parts.clear()
        return json.loads(whole)


class WebSocketUpstream(_TlsServer):
    """A TLS WebSocket echo server (wsproto) that records each handshake's headers."""

    def __init__(self, tls: TlsMaterial) -> None:
        super().__init__(tls, ("http/1.1",))
        self.handshakes: list[tuple[str, dict[str, str]]] = []  # (target, lower-cased headers)

    def events(self, sock: socket.socket, ws: WSConnection, first: bytes = b"") -> Iterator[Event]:
        """What the client sends, until it hangs up (or the server stops); a handshake is
        recorded and accepted. `first`: bytes of it already read."""
        while not self._stop.is_set():
            data, first = first or sock.recv(65536), b""
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
                    headers["host"] = event.host  # wsproto keeps it apart
                    if event.subprotocols:  # and these
                        headers["sec-websocket-protocol"] = ", ".join(event.subprotocols)
                    self.handshakes.append((event.target, headers))
                    chosen = self.subprotocol(event.subprotocols)
                    sock.sendall(ws.send(AcceptConnection(subprotocol=chosen)))
                yield event

    def subprotocol(self, offered: list[str]) -> str | None:
        """The subprotocol a handshake is answered with (here none: the echo speaks none)."""
        return None

    timeout = 5.0  # seconds a connection may stay silent

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self._ctx.wrap_socket(raw, server_side=True) as sock:
                sock.settimeout(self.timeout)
                self._handle(sock)
        except (OSError, ssl.SSLError):
            return

    def _handle(self, sock: ssl.SSLSocket) -> None:
        """One connection: here, an echo of every message (subclasses speak a protocol)."""
        ws = WSConnection(ConnectionType.SERVER)
        for event in self.events(sock, ws):
            if isinstance(event, TextMessage):
                sock.sendall(ws.send(Message(data="echo: " + event.data)))
            elif isinstance(event, BytesMessage):
                sock.sendall(ws.send(Message(data=bytes(event.data)[::-1])))
            elif isinstance(event, CloseConnection):
                sock.sendall(ws.send(event.response()))
                return


class Http2Upstream(_TlsServer):
    """A TLS server that speaks only HTTP/2 (ALPN h2) and answers every request with server-sent
    events, `gap` seconds apart, after `head_delay` seconds of silence. Records each request's
    headers (pseudo-headers included)."""

    def __init__(
        self, tls: TlsMaterial, events: list[bytes], gap: float, head_delay: float = 0.0
    ) -> None:
        super().__init__(tls, ("h2",))
        self._events, self._gap, self._head_delay = events, gap, head_delay
        self.requests: list[dict[str, str]] = []

    def _serve(self, raw: socket.socket) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        try:
            with self._ctx.wrap_socket(raw, server_side=True) as sock:
                sock.settimeout(5)
                conn.initiate_connection()
                sock.sendall(conn.data_to_send())
                while not self._stop.is_set():
                    data = sock.recv(65536)
                    if not data:
                        return
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.RequestReceived):
                            self.requests.append(dict(event.headers))  # type: ignore[arg-type]
                        elif isinstance(event, h2.events.StreamEnded):
                            self._respond(sock, conn, event.stream_id)
                    sock.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return

    def _respond(self, sock: ssl.SSLSocket, conn: h2.connection.H2Connection, stream: int) -> None:
        if self._stop.wait(self._head_delay):
            return
        conn.send_headers(stream, [(":status", "200"), ("content-type", "text/event-stream")])
        for i, event in enumerate(self._events):
            if i and self._stop.wait(self._gap):
                return
            conn.send_data(stream, event)
            sock.sendall(conn.data_to_send())
        conn.end_stream(stream)
        sock.sendall(conn.data_to_send())


def await_settings(sock: ssl.SSLSocket, conn: h2.connection.H2Connection) -> None:
    """Read the server's SETTINGS (and the window update that follows it in mitmproxy's
    preface), so that the client may send as much as the server allows."""
    settled = False
    while not settled:
        data = sock.recv(65536)
        assert data, "connection closed during the HTTP/2 preface"
        events = conn.receive_data(data)
        settled = any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
        sock.sendall(conn.data_to_send())
    while conn.outbound_flow_control_window <= 65535 and select.select([sock], [], [], 1)[0]:
        conn.receive_data(sock.recv(65536))


def h2_connect(port: int, ca_file: Path) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    """An HTTP/2 connection over TLS to 127.0.0.1:port (SNI localhost, trusting ca_file), its
    preface exchanged; the caller closes the socket."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    await_settings(sock, conn)
    return sock, conn


def h2_request(
    port: int,
    ca_file: Path,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    declared_length: int | None = None,
    authority: str = "localhost",
) -> tuple[int, dict[str, str], list[tuple[float, bytes]]]:
    """One HTTP/2 request over TLS to 127.0.0.1:port (SNI localhost, trusting ca_file).
    Returns status, response headers and (seconds since sending, data) per DATA frame.
    declared_length: a content-length larger than `body`, whose rest is never sent."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["h2"])
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        if body:
            await_settings(sock, conn)  # the server's windows, for a body larger than 64 KiB
        request = [(":method", "POST" if body else "GET"), (":scheme", "https")]
        request += [(":authority", authority), (":path", path), *headers]
        if declared_length is not None:
            request.append(("content-length", str(declared_length)))
        conn.send_headers(1, request, end_stream=not body)
        size = conn.max_outbound_frame_size
        for start in range(0, len(body), size):
            last = start + size >= len(body)
            chunk = body[start : start + size]
            conn.send_data(1, chunk, end_stream=last and declared_length is None)
        sock.sendall(conn.data_to_send())
        started = time.monotonic()
        status, response_headers, frames = 0, {}, []
        while True:
            data = sock.recv(65536)
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    response_headers = dict(event.headers)  # type: ignore[arg-type]
                    status = int(response_headers[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    frames.append((time.monotonic() - started, event.data))
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, response_headers, frames
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionResetError(f"stream reset: {event.error_code}")
            sock.sendall(conn.data_to_send())
