"""Stdlib HTTP client for tests: exact headers, optional keep-alive, timed streaming reads."""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from .headers import HeaderLookup

Headers = Mapping[str, str] | Sequence[tuple[str, str]]
Body = bytes | str | Iterable[bytes] | None
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass
class Reply(HeaderLookup):
    status: int
    reason: str
    headers: list[tuple[str, str]]  # as received, duplicates kept
    body: bytes
    # (seconds since the request was sent, bytes) per read; filled by HttpClient.stream()
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class _CountingConnection(http.client.HTTPConnection):
    opened = 0

    def connect(self) -> None:
        super().connect()
        self.opened += 1


class _CountingTlsConnection(_CountingConnection, http.client.HTTPSConnection):
    """HTTPSConnection.connect (TLS on top of the plain connect), counted the same way."""


class HttpClient:
    """Requests to one host:port over one connection, reused across requests when keep_alive.

    http.client silently reconnects if the server closed the connection; `connections_opened`
    shows whether that happened. Only the headers passed are sent, plus Host (unless given) and
    the body's framing (Content-Length, or Transfer-Encoding: chunked for iterables/chunked=True).
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        keep_alive: bool = True,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host, self.port, self.keep_alive, self.timeout = host, port, keep_alive, timeout
        self._tls, self._server_hostname = tls, server_hostname
        self._conn: _CountingConnection | None = None
        self._closed_opened = 0

    @property
    def connections_opened(self) -> int:
        return self._closed_opened + (self._conn.opened if self._conn else 0)

    def _connection(self) -> _CountingConnection:
        if self._conn is None:
            if self._tls is not None:
                # Connect to host (an address) but verify and send SNI for server_hostname.
                name = self._server_hostname or self.host
                conn = _CountingTlsConnection(
                    name, self.port, timeout=self.timeout, context=self._tls
                )
                conn._create_connection = (  # type: ignore[attr-defined]
                    lambda _addr, *a, **kw: socket.create_connection(
                        (self.host, self.port), *a, **kw
                    )
                )
                self._conn = conn
            else:
                self._conn = _CountingConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def open(
        self,
        method: str,
        path: str,
        body: Body = None,
        headers: Headers = (),
        *,
        json: Any = None,
        chunked: bool = False,
    ) -> http.client.HTTPResponse:
        """Send a request and return the response with its body unread (for streams that a test
        holds open). Read it fully before the next request on this client."""
        hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        names = {k.lower() for k, _ in hdrs}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            if "content-type" not in names:
                hdrs.append(("Content-Type", "application/json"))
        if isinstance(body, str):
            body = body.encode()
        payload: bytes | Iterable[bytes] | None = body
        if isinstance(body, bytes | None):
            if chunked:
                payload = [body] if body else []  # [] still sends the terminating 0-size chunk
            elif "content-length" not in names and (body or method.upper() in BODY_METHODS):
                # Like http.client: POST/PUT/PATCH always say how long their (maybe empty) body is.
                hdrs.append(("Content-Length", str(len(body or b""))))
        else:
            chunked = True
        if chunked and "transfer-encoding" not in names:
            hdrs.append(("Transfer-Encoding", "chunked"))
        if not self.keep_alive and "connection" not in names:
            hdrs.append(("Connection", "close"))
        conn = self._connection()
        conn.putrequest(method, path, skip_host="host" in names, skip_accept_encoding=True)
        for k, v in hdrs:
            conn.putheader(k, v)
        # The server may answer (a refusal) and close before the whole body is sent: its answer
        # is still there to read, as a browser or curl reads it.
        with contextlib.suppress(BrokenPipeError):
            conn.endheaders(payload, encode_chunked=chunked)
        return conn.getresponse()

    def request(
        self,
        method: str,
        path: str,
        body: Body = None,
        headers: Headers = (),
        *,
        json: Any = None,
        chunked: bool = False,
    ) -> Reply:
        resp = self.open(method, path, body, headers, json=json, chunked=chunked)
        reply = Reply(resp.status, resp.reason, resp.getheaders(), resp.read())
        self._after(resp)
        return reply

    def stream(
        self,
        method: str,
        path: str,
        body: Body = None,
        headers: Headers = (),
        *,
        json: Any = None,
        chunked: bool = False,
    ) -> Reply:
        """Like request(), but also notes when each piece of the body arrived (read1 returns
        what one chunk/recv delivered), so tests can see gaps survive the proxy."""
        t0 = time.monotonic()
        resp = self.open(method, path, body, headers, json=json, chunked=chunked)
        reply = Reply(resp.status, resp.reason, resp.getheaders(), b"")
        while data := resp.read1():
            reply.chunks.append((time.monotonic() - t0, data))
        reply.body = b"".join(d for _, d in reply.chunks)
        self._after(resp)
        return reply

    def get(self, path: str, headers: Headers = ()) -> Reply:
        return self.request("GET", path, None, headers)

    def post(
        self, path: str, body: Body = None, headers: Headers = (), *, json: Any = None
    ) -> Reply:
        return self.request("POST", path, body, headers, json=json)

    def _after(self, resp: http.client.HTTPResponse) -> None:
        if not self.keep_alive or resp.will_close:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._closed_opened += self._conn.opened
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def raw_exchange(
    port: int,
    data: bytes,
    host: str = "127.0.0.1",
    *,
    timeout: float = 5.0,
    until: bytes | None = None,
) -> bytes:
    """Send bytes as they are (for malformed or smuggling-style requests) and return what comes
    back: until the peer closes, `until` appears in the reply, or timeout passes quietly."""
    received = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            received += piece
            if until is not None and until in received:
                break
    return received
