"""Hostile request heads against a real mitmdump: the header fuzz on the wire (HTTP/1 and HTTP/2).

Every well-framed request gets a well-formed answer: a status line (or an HTTP/2 :status) that
is never 500, never a dropped connection; and the proxy is still alive afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest
from conftest import KeyrelayFactory
from support.client import HttpClient, raw_exchange
from support.fuzz import ENV, RULES, heads, http1_request, http2_fields
from support.proxy import DEFAULT_RULES, MITM_SCRIPT, KeyrelayProcess
from support.transport import h2_connect, h2_request, peak_rss_kib
from support.upstream import ResponseWriter, UpstreamServer

EXPECTED_HTTP1 = 1500
EXPECTED_HTTP2 = 300
MiB = 1024 * 1024


def http1_answer(port: int, data: bytes, method: str) -> int:
    """The status of the one answer to `data`, read as http.client reads any server's."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()  # raises on a dropped connection or a malformed status line
        response.read()
        return response.status


@pytest.mark.parametrize("rules_name", ["tokens"])
def test_the_header_fuzz_over_http1_gets_well_formed_answers(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer, rules_name: str
) -> None:
    relay = keyrelay_factory(RULES[rules_name], env=ENV)
    host = f"127.0.0.1:{relay.port}"
    bad: list[str] = []
    for i, head in enumerate(heads(1301, EXPECTED_HTTP1)):
        data = http1_request(head, host)
        try:
            status = http1_answer(relay.port, data, head[0])
        except (OSError, http.client.HTTPException) as e:
            bad.append(f"#{i} {e!r}: {data[:300]!r}")
            continue
        if status == 500:
            bad.append(f"#{i} 500: {data[:300]!r}")
    assert relay.alive(), relay.describe()
    assert not bad, f"{len(bad)} of {EXPECTED_HTTP1} heads:\n" + "\n".join(bad[:10])
    with HttpClient(relay.port) as client:  # still serving
        assert client.get("/_keyrelay/health").status == 200
    assert "Traceback" not in relay.output(), relay.output()[-3000:]


def test_the_header_fuzz_over_http2_gets_well_formed_answers(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory(RULES["tokens"], env=ENV)
    bad: list[str] = []
    sock, conn = h2_connect(relay.port, relay.confdir / "mitmproxy-ca-cert.pem")
    with sock:
        for i, head in enumerate(heads(1302, EXPECTED_HTTP2)):
            method, path, _ = head
            stream = conn.get_next_available_stream_id()
            body = b'{"model": "gpt-4o-mini"}' if method in ("POST", "PUT", "PATCH") else b""
            pseudo = [(":method", method), (":scheme", "https"), (":authority", "localhost")]
            conn.send_headers(stream, [*pseudo, (":path", path), *http2_fields(head)], not body)
            if body:
                conn.send_data(stream, body, end_stream=True)
            sock.sendall(conn.data_to_send())
            status = _h2_status(sock, conn, stream)
            if status is None or status == 500:
                bad.append(f"#{i} {status}: {head!r}"[:300])
    assert relay.alive(), relay.describe()
    assert not bad, f"{len(bad)} of {EXPECTED_HTTP2} heads:\n" + "\n".join(bad[:10])
    assert "Traceback" not in relay.output(), relay.output()[-3000:]


def _h2_status(sock: ssl.SSLSocket, conn: h2.connection.H2Connection, stream: int) -> int | None:
    """The stream's :status once it ended; None when it was reset or the connection closed."""
    status = None
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                status = int(dict(event.headers)[":status"])  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                sock.sendall(conn.data_to_send())
                return status
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                return None
        sock.sendall(conn.data_to_send())


# -- endless heads ------------------------------------------------------------------------------

HEADER_LINE = b"x-filler: " + b"a" * 100 + b"\r\n"


def _endless_head(port: int, total: int) -> tuple[int, bytes]:
    """A request line, then header lines up to `total` bytes, never the blank line. Returns
    how many bytes went out before keyrelay closed the connection, and what it answered."""
    sent, answer = 0, b""
    block = HEADER_LINE * 1000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/openai/models HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        try:
            while sent < total:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # closed by keyrelay: what the cap is for
        try:
            sock.settimeout(5)
            while piece := sock.recv(65536):
                answer += piece
        except OSError:
            pass
    return sent, answer


def test_an_endless_head_is_cut_off_with_bounded_memory_and_log(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    relay = keyrelay_factory()
    assert relay.pid is not None
    before, log_before = peak_rss_kib(relay.pid), relay.mark()
    sent, _ = _endless_head(relay.port, 64 * MiB)
    relay.wait_for_output(r"client disconnect", timeout=60, since=log_before)
    time.sleep(1)  # what mitmproxy logs about the closed connection comes after
    growth = peak_rss_kib(relay.pid) - before
    log_growth = relay.mark() - log_before
    print(f"sent {sent} bytes, RSS +{growth} KiB, log +{log_growth} bytes")
    assert sent < 16 * MiB, "the connection stayed open for the whole endless head"
    assert growth < 50 * 1024, f"RSS grew by {growth} KiB"
    assert log_growth < 64 * 1024, f"the log grew by {log_growth} bytes"
    assert "aaaaaaaaaaaaaaaa" not in relay.output(log_before)  # never the raw buffer
    assert relay.alive()
    with HttpClient(relay.port) as client:
        assert client.get("/_keyrelay/health").status == 200


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"x-big: " + b"b" * 9000 + b"\r\n", "line is longer than 8192"),
        (HEADER_LINE * 700, "larger than 65536"),
    ],
)
def test_a_head_over_the_cap_gets_a_431_problem(
    keyrelay: KeyrelayProcess, head: bytes, problem: str
) -> None:
    data = b"GET /api/openai/models HTTP/1.1\r\nhost: 127.0.0.1\r\n" + head
    reply = raw_exchange(keyrelay.port, data, timeout=5)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", reply[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["status"] == 431 and problem in body["detail"]
    assert body["title"] == "Request Header Fields Too Large"
    assert body["type"].endswith("/request-head-too-large")


def test_a_head_just_under_the_caps_is_served(client: HttpClient) -> None:
    headers = [(f"x-filler-{i}", "a" * 8000) for i in range(7)]
    assert client.get("/_keyrelay/health", headers=headers).status == 200


# -- DNS rebinding ------------------------------------------------------------------------------

REBOUND = "rebind.attacker.example"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/openai/models", {}),
        ("GET", "/_keyrelay/health", {}),
        ("POST", "/api/anthropic/v1/messages", {"origin": f"http://{REBOUND}:8080"}),
        (
            "OPTIONS",
            "/api/openai/models",
            {"origin": f"http://{REBOUND}:8080", "access-control-request-method": "GET"},
        ),
    ],
)
def test_a_host_keyrelay_does_not_serve_gets_a_421(
    keyrelay: KeyrelayProcess,
    upstream: UpstreamServer,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    with HttpClient(keyrelay.port) as client:
        reply = client.request(
            method,
            path,
            b"{}" if method == "POST" else None,
            {"host": REBOUND + ":8080", **headers},
        )
    assert reply.status == 421, reply.body
    assert reply.json()["type"].endswith("/misdirected-request")
    assert reply.json()["title"] == "Misdirected Request"
    assert reply.header("access-control-allow-origin") is None
    assert upstream.requests == []


def test_loopback_names_are_served(keyrelay: KeyrelayProcess, upstream: UpstreamServer) -> None:
    for host in ("localhost", f"localhost:{keyrelay.port}", "127.0.0.1:1", "[::1]:8080"):
        with HttpClient(keyrelay.port) as client:
            assert client.get("/api/openai/models", {"host": host}).status == 200, host
    assert len(upstream.requests) == 4


def test_a_rebound_http2_authority_gets_a_421(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    ca = keyrelay.confdir / "mitmproxy-ca-cert.pem"
    status, _, frames = h2_request(keyrelay.port, ca, "/api/openai/models", [], authority=REBOUND)
    assert status == 421
    assert b"misdirected-request" in b"".join(d for _, d in frames)
    assert h2_request(keyrelay.port, ca, "/api/openai/models", [])[0] == 200
    assert len(upstream.requests) == 1


def test_server_names_lets_a_deployment_name_in(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    rules = "server_names: [keyrelay.example.com]\n" + DEFAULT_RULES.read_text()
    relay = keyrelay_factory(rules)
    with HttpClient(relay.port) as client:
        assert client.get("/api/openai/models", {"host": "keyrelay.example.com"}).status == 200
        assert client.get("/api/openai/models", {"host": REBOUND}).status == 421


# -- slowloris and descriptors ------------------------------------------------------------------

HALF_HEAD = b"GET /api/openai/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closed `sock` (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_half_sent_head_is_closed_after_the_head_timeout(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    """With the default 10 s (mitmproxy alone keeps them for tcp_timeout, 3600 s in the
    scripts): a head left half-sent, and a keep-alive connection left idle after its answer."""
    relay = keyrelay_factory()  # scripts/_mitm sets tcp_timeout=3600
    with (
        socket.create_connection(("127.0.0.1", relay.port), timeout=10) as half,
        socket.create_connection(("127.0.0.1", relay.port), timeout=10) as idle,
    ):
        half.sendall(HALF_HEAD)
        idle.sendall(b"GET /_keyrelay/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(idle)
        response.begin()
        assert response.status == 200  # a complete head is answered
        response.read()
        assert _closed_within(half, 30), "a half-sent head held its connection open"
        assert _closed_within(idle, 30), "an idle keep-alive connection was never closed"
    relay.wait_for_output(r"no complete request head within 10 s, closed")


def test_a_slow_request_body_is_not_cut_by_the_head_timeout(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory(extra_args=["--set", "keyrelay_head_timeout=1"])

    def slow_body() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(1)
            yield b"{} "

    with HttpClient(relay.port) as client:
        assert client.post("/api/openai/chat/completions", slow_body()).status == 200
    assert upstream.requests[0].body == b"{} {} {} "


def test_half_sent_heads_from_one_address_leave_room_for_others(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    """At a 512-descriptor limit, 600 half-sent heads from 127.0.0.2 held every descriptor
    (a legitimate request then failed with "Too many open files"); the cap per address (256 by
    default) refuses all but 256 of them."""
    relay = keyrelay_factory(command=["prlimit", "--nofile=512:512", str(MITM_SCRIPT), "mitmdump"])
    held: list[socket.socket] = []
    try:
        for _ in range(600):
            sock = socket.create_connection(
                ("127.0.0.1", relay.port), timeout=30, source_address=("127.0.0.2", 0)
            )
            held.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(HALF_HEAD)
        time.sleep(1)  # keyrelay has accepted (or refused) them all
        with HttpClient(relay.port) as client:
            assert client.get("/api/openai/models").status == 200
        open_ones = [s for s in held if not _closed_within(s, 0.01)]
        assert len(open_ones) == 256
    finally:
        for sock in held:
            sock.close()
    assert relay.alive()
    assert "Too many open files" not in relay.output()


def test_the_open_file_limit_is_raised_to_the_hard_limit(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    relay = keyrelay_factory(command=["prlimit", "--nofile=256:4096", str(MITM_SCRIPT), "mitmdump"])
    limits = Path(f"/proc/{relay.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line


# -- HTTP/2 clients that do not play along ------------------------------------------------------


H2_GET = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]


def test_an_http2_client_that_never_opens_its_window_does_not_grow_keyrelay(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    """Without reading (no WINDOW_UPDATE), the client admits 64 KiB; the 64 MiB answer waited in
    keyrelay's memory. Now its stream is reset once 16 MiB wait, and the upstream let go."""
    relay = keyrelay_factory()
    assert relay.pid is not None
    block = b"z" * MiB

    def download(_req: object, w: ResponseWriter) -> None:
        w.send_head(
            200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(64 * MiB))]
        )
        for _ in range(64):
            w.write_raw(block)

    upstream.route("GET", "/v1/files/file-bigcontent01/content", download)
    before = peak_rss_kib(relay.pid)
    sock, conn = h2_connect(relay.port, relay.confdir / "mitmproxy-ca-cert.pem")
    reset = None
    with sock:
        conn.send_headers(
            1, [*H2_GET, (":path", "/api/openai/files/file-bigcontent01/content")], end_stream=True
        )
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 30
        while reset is None and time.monotonic() < deadline:
            try:
                data = sock.recv(65536)  # read, but never acknowledge: the window stays shut
            except TimeoutError:
                break  # nothing more comes: the rest waits in keyrelay
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    reset = event.error_code
            sock.sendall(conn.data_to_send())
        time.sleep(1)
        growth = peak_rss_kib(relay.pid) - before
    print(f"stream reset with {reset}, peak RSS +{growth} KiB")
    assert reset == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert growth < 50 * 1024, f"RSS grew by {growth} KiB"
    assert relay.alive()


def test_http2_rapid_resets_do_not_reach_the_upstream(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    """500 streams each opened and reset at once (CVE-2023-44487): 343 to 500 of them were
    requests upstream, with the key."""
    sock, conn = h2_connect(keyrelay.port, keyrelay.confdir / "mitmproxy-ca-cert.pem")
    with sock:
        try:
            for i in range(500):
                stream = conn.get_next_available_stream_id()
                conn.send_headers(stream, [*H2_GET, (":path", f"/api/openai/models?{i}")], True)
                conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass  # keyrelay closed the connection: what the cap is for
        time.sleep(3)  # connection open: what keyrelay sends upstream has arrived
    print(f"{len(upstream.requests)} of 500 reset streams reached the upstream")
    assert len(upstream.requests) <= 100
    assert keyrelay.alive()
    ca = keyrelay.confdir / "mitmproxy-ca-cert.pem"
    assert h2_request(keyrelay.port, ca, "/api/openai/models", [])[0] == 200
