"""A fake provider: an HTTPS/1.1 server on 127.0.0.1 that records requests exactly as received.

One thread per connection, so a test can hold several streaming responses open at once, and a
hand-written HTTP/1.1 parser, so the record is what was on the wire: the raw request-target,
header names in their case and order with duplicates, and whether the body came chunked.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any, Self

from .headers import HeaderLookup
from .lifecycle import StartStop
from .tls import TlsMaterial

HeaderList = list[tuple[str, str]]
Headers = Mapping[str, str] | Sequence[tuple[str, str]]
Gap = float | Sequence[float]

MAX_HEAD_BYTES = 64 * 1024
BAD_REQUEST_RESPONSE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BadRequest(Exception):
    """The request could not be framed; the server answers 400 and closes the connection."""


@dataclass
class RecordedRequest(HeaderLookup):
    """One request as the upstream received it."""

    method: str
    target: str  # the request-target exactly as sent: path plus query, or absolute form
    version: str
    headers: HeaderList  # names keep their case; order and duplicates as received
    body: bytes  # de-chunked when the body came chunked
    chunked: bool
    trailers: HeaderList
    connection_id: int  # 1, 2, ... in accept order for this server (reset() does not rewind)
    index_on_connection: int  # 0 for the first request on its connection
    sni: str | None
    alpn: str | None
    raw_head: bytes
    received_at: float  # time.monotonic() when the head was complete
    error: str | None = None  # set when framing failed (then body is empty)
    response_status: int | None = None
    response_aborted: bool = False  # the peer went away while the response was being written
    response_done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def host(self) -> str | None:
        return self.header("host")

    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]

    def json(self) -> Any:
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.body.decode()
        except UnicodeDecodeError:
            text = None
        return {
            "method": self.method,
            "target": self.target,
            "path": self.path,
            "query": self.query,
            "version": self.version,
            "host": self.host,
            "headers": [[k, v] for k, v in self.headers],
            "body": text,
            "body_b64": base64.b64encode(self.body).decode(),
            "chunked": self.chunked,
            "trailers": [[k, v] for k, v in self.trailers],
            "connection_id": self.connection_id,
            "index_on_connection": self.index_on_connection,
            "sni": self.sni,
        }


class ResponseWriter:
    """Writes one response. Each write goes straight to the socket, so chunks arrive as sent."""

    def __init__(self, sock: socket.socket, request: RecordedRequest, stopping: threading.Event):
        self._sock = sock
        self.request = request
        self._stopping = stopping
        self.head_sent = False
        self.wrote = False
        self.chunked = False
        self.finished = False
        self.close_after = False  # close the connection once the handler returns

    # -- low level ---------------------------------------------------------------------------
    def write_raw(self, data: bytes) -> None:
        """Send bytes as they are: for malformed responses or hand-made framing.

        Raw bytes before send_head mean the framing is unknown, so the connection closes after."""
        if not self.head_sent:
            self.close_after = True
        self._send(data)

    def _send(self, data: bytes) -> None:
        self.wrote = True
        try:
            self._sock.sendall(data)
        except OSError:
            self.request.response_aborted = True
            raise

    def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the server stops, so stop() never waits out a long gap."""
        if self._stopping.wait(seconds):
            raise ConnectionAbortedError("upstream server stopping")

    def send_head(
        self,
        status: int,
        headers: Headers = (),
        *,
        reason: str | None = None,
        chunked: bool = False,
    ) -> None:
        """Send status line and headers. With chunked=True, Transfer-Encoding: chunked is added;
        with neither that nor a Content-Length in headers, the body is delimited by closing."""
        hdrs = _header_list(headers)
        names = {k.lower() for k, _ in hdrs}
        if chunked and "transfer-encoding" not in names:
            hdrs.append(("Transfer-Encoding", "chunked"))
        self.chunked = chunked
        if not chunked and "content-length" not in names and not _bodiless(self.request, status):
            self.close_after = True
        if self.close_after and "connection" not in names:
            hdrs.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {status} {reason or _reason(status)}"]
        lines += [f"{k}: {v}" for k, v in hdrs]
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.head_sent = True
        self.request.response_status = status

    def write_chunk(self, data: bytes) -> None:
        """One chunk on the wire (empty data is skipped: it would end the body)."""
        if data:
            self.write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self, trailers: Headers = ()) -> None:
        """Finish a chunked body (with optional trailers); a no-op for other framings."""
        if self.chunked and not self.finished:
            tail = "".join(f"{k}: {v}\r\n" for k, v in _header_list(trailers))
            self.write_raw(b"0\r\n" + tail.encode("latin-1") + b"\r\n")
        self.finished = True

    # -- helpers -----------------------------------------------------------------------------
    def send(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Headers = (),
        *,
        content_type: str | None = None,
    ) -> None:
        """A whole response with Content-Length."""
        hdrs = _header_list(headers)
        names = {k.lower() for k, _ in hdrs}
        if content_type and "content-type" not in names:
            hdrs.append(("Content-Type", content_type))
        if "content-length" not in names and not _bodiless(self.request, status, head_ok=True):
            hdrs.append(("Content-Length", str(len(body))))
        self.send_head(status, hdrs)
        if self.request.method != "HEAD":
            self.write_raw(body)
        self.finished = True

    def send_json(self, obj: Any, status: int = 200, headers: Headers = ()) -> None:
        self.send(status, json.dumps(obj).encode(), headers, content_type="application/json")

    def send_chunks(
        self,
        chunks: Iterable[bytes],
        *,
        gap: Gap = 0.0,
        status: int = 200,
        headers: Headers = (),
        content_type: str = "application/octet-stream",
        first_delay: float = 0.0,
        trailers: Headers = (),
    ) -> None:
        """A chunked body, one wire chunk per item, sleeping `gap` between items.

        gap is one number or one per interval (item i+1 waits gap[i])."""
        hdrs = _header_list(headers)
        if "content-type" not in {k.lower() for k, _ in hdrs}:
            hdrs.append(("Content-Type", content_type))
        self.send_head(status, hdrs, chunked=True)
        if first_delay:
            self.sleep(first_delay)
        for i, chunk in enumerate(chunks):
            if i:
                self.sleep(gap if isinstance(gap, int | float) else gap[i - 1])
            self.write_chunk(chunk)
        self.end(trailers)

    def send_sse(
        self,
        events: Iterable[SseEvent],
        *,
        gap: Gap = 0.0,
        status: int = 200,
        headers: Headers = (),
        first_delay: float = 0.0,
    ) -> None:
        """Server-sent events, one event per chunk."""
        hdrs = [("Cache-Control", "no-cache"), *_header_list(headers)]
        self.send_chunks(
            (format_sse(e) for e in events),
            gap=gap,
            status=status,
            headers=hdrs,
            content_type="text/event-stream",
            first_delay=first_delay,
        )

    def send_ndjson(
        self,
        items: Iterable[Any],
        *,
        gap: Gap = 0.0,
        status: int = 200,
        headers: Headers = (),
        first_delay: float = 0.0,
    ) -> None:
        """Newline-delimited JSON, one line per chunk."""
        self.send_chunks(
            (json.dumps(i).encode() + b"\n" for i in items),
            gap=gap,
            status=status,
            headers=headers,
            content_type="application/x-ndjson",
            first_delay=first_delay,
        )


SseEvent = str | bytes | Mapping[str, Any]
Handler = Callable[[RecordedRequest, ResponseWriter], None]


def format_sse(event: SseEvent) -> bytes:
    """str -> one data field; bytes -> sent as they are; a mapping -> its id/event/retry/data
    fields (a non-str data is JSON-encoded)."""
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return b"".join(b"data: %s\n" % line.encode() for line in event.split("\n")) + b"\n"
    out = []
    for name in ("id", "event", "retry"):
        if name in event:
            out.append(f"{name}: {event[name]}\n")
    if "data" in event:
        data = event["data"]
        text = data if isinstance(data, str) else json.dumps(data)
        out += [f"data: {line}\n" for line in text.split("\n")]
    return ("".join(out) + "\n").encode()


# -- handler factories ----------------------------------------------------------------------
def echo(req: RecordedRequest, w: ResponseWriter) -> None:
    """The default: answer 200 with the recorded request as JSON."""
    w.send_json(req.to_json())


def json_response(obj: Any, status: int = 200, headers: Headers = ()) -> Handler:
    return lambda _req, w: w.send_json(obj, status, headers)


def bytes_response(
    body: bytes,
    status: int = 200,
    headers: Headers = (),
    content_type: str | None = "application/octet-stream",
) -> Handler:
    return lambda _req, w: w.send(status, body, headers, content_type=content_type)


def sse_response(
    events: Sequence[SseEvent],
    gap: Gap = 0.0,
    status: int = 200,
    headers: Headers = (),
    first_delay: float = 0.0,
) -> Handler:
    return lambda _req, w: w.send_sse(
        events, gap=gap, status=status, headers=headers, first_delay=first_delay
    )


def ndjson_response(
    items: Sequence[Any],
    gap: Gap = 0.0,
    status: int = 200,
    headers: Headers = (),
    first_delay: float = 0.0,
) -> Handler:
    return lambda _req, w: w.send_ndjson(
        items, gap=gap, status=status, headers=headers, first_delay=first_delay
    )


def chunked_response(
    chunks: Sequence[bytes],
    gap: Gap = 0.0,
    status: int = 200,
    headers: Headers = (),
    content_type: str = "application/octet-stream",
    first_delay: float = 0.0,
) -> Handler:
    return lambda _req, w: w.send_chunks(
        chunks,
        gap=gap,
        status=status,
        headers=headers,
        content_type=content_type,
        first_delay=first_delay,
    )


@dataclass
class _Route:
    method: str | None
    prefix: str
    host: str | None
    handler: Handler


class UpstreamServer(StartStop):
    """The fake provider. TLS with `tls`'s server certificate, or plain HTTP when tls is None."""

    def __init__(self, tls: TlsMaterial | None, *, host: str = "127.0.0.1") -> None:
        self._tls_ctx = tls.server_context() if tls else None
        if self._tls_ctx:
            self._tls_ctx.sni_callback = _remember_sni
        self._bind_host = host
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._routes: list[_Route] = []
        self._default: Handler = echo
        self._errors: list[str] = []
        self._conn_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conn_threads: set[threading.Thread] = set()
        self._live_socks: set[socket.socket] = set()
        self.port = 0
        self.connections_accepted = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        listener = socket.create_server((self._bind_host, 0))
        # A timeout lets the accept loop notice stop(); close() alone does not wake accept().
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"upstream-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._accept_thread:
            self._accept_thread.join(timeout)
        if self._listener:
            self._listener.close()
        with self._lock:
            socks, threads = list(self._live_socks), list(self._conn_threads)
        for s in socks:  # wakes connection threads blocked in recv
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(timeout)

    # -- programming ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self._tls_ctx else 'http'}://localhost:{self.port}"

    def route(
        self, method: str | None, path_prefix: str, handler: Handler, *, host: str | None = None
    ) -> None:
        """Answer requests whose path starts with path_prefix (and method/host match, when given)
        with handler. The longest matching prefix wins; among equals, the latest route."""
        with self._lock:
            self._routes.append(_Route(method and method.upper(), path_prefix, host, handler))

    def set_default(self, handler: Handler) -> None:
        with self._lock:
            self._default = handler

    def reset(self) -> None:
        """Forget routes, recorded requests and handler errors; the default goes back to echo."""
        with self._lock:
            self._routes.clear()
            self._requests.clear()
            self._errors.clear()
            self._default = echo

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- inspection ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request recorded so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handlers that raised (other than the peer going away)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least count requests are recorded; AssertionError on timeout."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(
                    f"upstream got {len(self._requests)} requests, expected {count}: "
                    f"{[(r.method, r.target) for r in self._requests]}"
                )
            return list(self._requests)

    def only_request(self) -> RecordedRequest:
        """The single recorded request; AssertionError if there is not exactly one."""
        reqs = self.requests
        assert len(reqs) == 1, f"expected one upstream request, got {len(reqs)}: {reqs}"
        return reqs[0]

    # -- serving -------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn_id = next(self._conn_ids)
                self.connections_accepted += 1
                self._live_socks.add(sock)
            t = threading.Thread(
                target=self._serve_connection,
                args=(sock, conn_id),
                name=f"upstream-conn-{conn_id}",
                daemon=True,
            )
            with self._lock:
                self._conn_threads.add(t)
            t.start()

    def _serve_connection(self, raw: socket.socket, conn_id: int) -> None:
        sock: socket.socket = raw
        try:
            sni: str | None = None
            alpn: str | None = None
            if self._tls_ctx:
                tls_sock = self._tls_ctx.wrap_socket(
                    raw, server_side=True, do_handshake_on_connect=False
                )
                # Handshake here, not in the accept loop, so a slow client stalls only itself.
                tls_sock.settimeout(10)
                tls_sock.do_handshake()
                tls_sock.settimeout(None)
                with self._lock:
                    self._live_socks.discard(raw)
                    self._live_socks.add(tls_sock)
                sock = tls_sock
                sni = getattr(tls_sock, "keyrelay_sni", None)
                alpn = tls_sock.selected_alpn_protocol()
            reader = sock.makefile("rb")
            for index in itertools.count():
                if not self._serve_one(sock, reader, conn_id, index, sni, alpn):
                    break
        except (OSError, ssl.SSLError):
            pass  # peer went away or handshake failed: nothing left to answer
        finally:
            with self._lock:
                self._live_socks.discard(sock)
                self._live_socks.discard(raw)
                self._conn_threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                sock.close()

    def _serve_one(
        self,
        sock: socket.socket,
        reader: IO[bytes],
        conn_id: int,
        index: int,
        sni: str | None,
        alpn: str | None,
    ) -> bool:
        """Read, record and answer one request. False when the connection should end."""
        head = _read_head(reader)
        if head is None:
            return False
        received_at = time.monotonic()
        try:
            method, target, version, headers = _parse_head(head)
        except BadRequest as e:
            sock.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self._record_error(f"connection {conn_id}: unparsable head {head!r}: {e}")
            return False
        req = RecordedRequest(
            method=method,
            target=target,
            version=version,
            headers=headers,
            body=b"",
            chunked=False,
            trailers=[],
            connection_id=conn_id,
            index_on_connection=index,
            sni=sni,
            alpn=alpn,
            raw_head=head,
            received_at=received_at,
        )
        try:
            if any(v.lower() == "100-continue" for v in req.header_all("expect")):
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.body, req.chunked, req.trailers = _read_body(reader, headers)
        except BadRequest as e:
            req.error = str(e)
            with self._lock:
                self._requests.append(req)
                self._lock.notify_all()
            sock.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return False
        with self._lock:
            self._requests.append(req)
            self._lock.notify_all()
            handler = self._pick(req)
        writer = ResponseWriter(sock, req, self._stopping)
        try:
            handler(req, writer)
            if not writer.wrote:
                writer.send(204)
            writer.end()
        except OSError:
            req.response_aborted = True
            return False
        except Exception:
            self._record_error(traceback.format_exc())
            if not writer.wrote:
                writer.send(500, traceback.format_exc().encode(), content_type="text/plain")
            return False
        finally:
            req.response_done.set()
        return not (writer.close_after or _wants_close(req))

    def _pick(self, req: RecordedRequest) -> Handler:
        host = (req.host or "").rsplit(":", 1)[0].lower() if req.host else ""
        best: _Route | None = None
        for r in self._routes:
            if r.method and r.method != req.method:
                continue
            if r.host and r.host.lower() != host:
                continue
            if not req.path.startswith(r.prefix):
                continue
            if best is None or len(r.prefix) >= len(best.prefix):
                best = r
        return best.handler if best else self._default

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)


def _remember_sni(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
    # Python has no server-side getter for the SNI, so keep it on the socket being handshaken.
    sock.keyrelay_sni = name  # type: ignore[union-attr]


# -- HTTP/1.1 parsing ---------------------------------------------------------------------------
def _read_head(reader: IO[bytes]) -> bytes | None:
    """Bytes up to and including the blank line; None on a clean EOF before any byte."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEAD_BYTES + 1)
        if not line:
            if not lines:
                return None
            raise ConnectionResetError("connection closed inside a request head")
        if not lines and line in (b"\r\n", b"\n"):
            continue  # RFC 9112 2.2: tolerate blank lines before a request line
        lines.append(line)
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise ConnectionResetError("request head too large")
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse_head(head: bytes) -> tuple[str, str, str, HeaderList]:
    text = head.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers: HeaderList = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise BadRequest("obsolete header folding")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], parts[2], headers


def _read_body(reader: IO[bytes], headers: HeaderList) -> tuple[bytes, bool, HeaderList]:
    """Returns (body, was_chunked, trailers). Framing per RFC 9112 6.3 for requests."""
    te = [v.strip().lower() for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v.strip() for k, v in headers if k.lower() == "content-length"]
    if te:
        codings = [c.strip() for v in te for c in v.split(",")]
        if codings[-1] != "chunked":
            raise BadRequest(f"transfer-encoding without final chunked: {te}")
        if cl:
            raise BadRequest("both transfer-encoding and content-length")
        body, trailers = _read_chunked(reader)
        return body, True, trailers
    if cl:
        if len(set(cl)) != 1 or not cl[0].isdigit():
            raise BadRequest(f"bad content-length {cl}")
        n = int(cl[0])
        body = reader.read(n)
        if len(body) != n:
            raise ConnectionResetError("connection closed inside a request body")
        return body, False, []
    return b"", False, []


def _read_chunked(reader: IO[bytes]) -> tuple[bytes, HeaderList]:
    parts: list[bytes] = []
    while True:
        line = reader.readline(1024)
        if not line.endswith(b"\n"):
            raise ConnectionResetError("connection closed inside a chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(f"bad chunk size line {line!r}") from None
        if size == 0:
            break
        data = reader.read(size)
        if len(data) != size:
            raise ConnectionResetError("connection closed inside a chunk")
        parts.append(data)
        if reader.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequest("chunk data not followed by CRLF")
    trailers: HeaderList = []
    while True:
        line = reader.readline(MAX_HEAD_BYTES)
        if not line:
            raise ConnectionResetError("connection closed inside chunked trailers")
        if line in (b"\r\n", b"\n"):
            return b"".join(parts), trailers
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        trailers.append((name, value.strip(" \t")))


def _header_list(headers: Headers) -> HeaderList:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _bodiless(req: RecordedRequest, status: int, *, head_ok: bool = False) -> bool:
    """Responses that never carry a body, so need neither length nor close to delimit."""
    return status < 200 or status in (204, 304) or (req.method == "HEAD" and not head_ok)


def _wants_close(req: RecordedRequest) -> bool:
    tokens = {t.strip().lower() for v in req.header_all("connection") for t in v.split(",")}
    if req.version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
