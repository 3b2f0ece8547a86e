"""HTTP/2: clients may speak it to keyrelay over TLS, and the upstream connection uses it where
the provider offers it; streams keep their timing either way."""

from __future__ import annotations

import json
import select
import socket
import ssl
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import KeyrelayFactory
from support.client import HttpClient
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.tls import TlsMaterial
from support.transport import (
    COMPRESSORS,
    Http2Upstream,
    h2_connect,
    h2_request,
    peak_rss_kib,
    rules_with_transport,
)
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, sse_response

GAP = 0.4
MiB = 1024 * 1024
EVENTS = [b"data: %d\n\n" % i for i in range(4)]


@pytest.fixture
def h2_upstream(test_ca: TlsMaterial) -> Iterator[Http2Upstream]:
    with Http2Upstream(test_ca, EVENTS, GAP) as server:
        yield server


def _ca(relay: KeyrelayProcess) -> object:
    return relay.confdir / "mitmproxy-ca-cert.pem"


def test_an_http2_client_gets_a_stream_with_its_timing(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", sse_response(["a", "b", "c"], gap=GAP))
    status, headers, frames = h2_request(
        keyrelay.port, _ca(keyrelay), "/api/anthropic/v1/messages", [], b"{}"
    )
    assert status == 200
    assert headers["x-accel-buffering"] == "no"
    assert b"".join(d for _, d in frames) == b"data: a\n\ndata: b\n\ndata: c\n\n"
    assert frames[-1][0] - frames[0][0] > GAP
    request = upstream.only_request()
    assert request.header("x-api-key") == TEST_KEYS["ANTHROPIC_API_KEY"]


def test_an_http2_client_gets_decoded_bytes(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    wire = COMPRESSORS["br"]([b"data: x\n\n", b"data: y\n\n"])
    upstream.route(
        "POST",
        "/v1/messages",
        lambda _r, w: w.send_chunks(
            wire, content_type="text/event-stream", headers=[("Content-Encoding", "br")]
        ),
    )
    status, headers, frames = h2_request(
        keyrelay.port, _ca(keyrelay), "/api/anthropic/v1/messages", [], b"{}"
    )
    assert (status, b"".join(d for _, d in frames)) == (200, b"data: x\n\ndata: y\n\n")
    assert "content-encoding" not in headers


def test_an_http2_client_gets_a_504_when_the_upstream_is_silent(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory(rules_with_transport({"timeouts": {"first_byte": 1}}))

    def silent(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.sleep(3)

    upstream.route("POST", "/v1/messages", silent)
    status, headers, frames = h2_request(
        relay.port, _ca(relay), "/api/anthropic/v1/messages", [], b"{}"
    )
    assert status == 504
    assert headers["content-type"] == "application/json"
    assert b"upstream-timeout" in b"".join(d for _, d in frames)


def test_an_http1_client_streams_over_an_http2_upstream(
    keyrelay_factory: KeyrelayFactory, h2_upstream: Http2Upstream
) -> None:
    relay = keyrelay_factory(upstream_port=h2_upstream.port)
    with HttpClient(relay.port) as client:
        for _ in range(3):
            reply = client.stream("POST", "/api/anthropic/v1/messages", json={})
            assert reply.status == 200
            assert reply.body == b"".join(EVENTS)
            assert reply.header("transfer-encoding") == "chunked"  # framing an h1 client can use
            assert reply.chunks[-1][0] - reply.chunks[0][0] > 2 * GAP
        assert client.connections_opened == 1
    assert h2_upstream.connections == 1  # one HTTP/2 connection carried all three
    first = h2_upstream.requests[0]
    assert first[":authority"] == "api.anthropic.com"
    assert first[":path"] == "/v1/messages"
    assert first["x-api-key"] == TEST_KEYS["ANTHROPIC_API_KEY"]


def test_an_http1_client_gets_a_504_when_an_http2_upstream_is_silent(
    keyrelay_factory: KeyrelayFactory, test_ca: TlsMaterial
) -> None:
    with Http2Upstream(test_ca, EVENTS, GAP, head_delay=3) as silent:
        relay = keyrelay_factory(
            rules_with_transport({"timeouts": {"first_byte": 1}}), upstream_port=silent.port
        )
        with HttpClient(relay.port) as client:
            reply = client.post("/api/anthropic/v1/messages", json={})
            assert reply.status == 504
            assert reply.json()["type"].endswith("/upstream-timeout")
            assert client.connections_opened == 1


def test_upstream_http2_can_be_turned_off(
    keyrelay_factory: KeyrelayFactory, h2_upstream: Http2Upstream
) -> None:
    relay = keyrelay_factory(
        rules_with_transport({"upstream_http2": False}), upstream_port=h2_upstream.port
    )
    with HttpClient(relay.port) as client:
        reply = client.post("/api/anthropic/v1/messages", json={})
    assert reply.status == 502  # this upstream speaks nothing but HTTP/2
    assert h2_upstream.requests == []


def test_an_http2_refusal_is_answered_without_reading_a_large_body(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    """Over HTTP/2 too, a refused 10 GiB upload is answered at once, its body never read."""
    ctx = ssl.create_default_context(cafile=str(_ca(keyrelay)))
    ctx.set_alpn_protocols(["h2"])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with (
        socket.create_connection(("127.0.0.1", keyrelay.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", "/nowhere"),
                ("content-length", str(10 * 2**30)),
            ],
        )
        conn.send_data(1, b"x" * 16000)
        sock.sendall(conn.data_to_send())
        body = b""
        while True:
            data = sock.recv(65536)
            assert data, "connection closed before the answer"
            events = conn.receive_data(data)
            body += b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
            if any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in events):
                break
            sock.sendall(conn.data_to_send())
    assert json.loads(body)["type"].endswith("/no-route")
    assert upstream.requests == []


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])  # buffered, and streamed upstream
def test_an_http2_body_without_content_length_is_framed_for_an_http1_upstream(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer, size: int
) -> None:
    """Unframed, the HTTP/1 upstream read the body as a second request (with no key)."""
    body = b'{"model": "x", "pad": "' + b"a" * size + b'"}'
    status, _, _ = h2_request(
        keyrelay.port, _ca(keyrelay), "/api/openai/chat/completions", [], body
    )
    assert status == 200
    assert len(upstream.requests) == 1
    assert upstream.requests[0].chunked
    assert upstream.requests[0].body == body


def test_an_http2_refusal_without_content_length_does_not_read_the_body(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    """The body may be endless: the answer goes out while it is still arriving, and keyrelay's
    memory does not grow with it."""
    assert keyrelay.pid is not None
    before = peak_rss_kib(keyrelay.pid)
    sock, conn = h2_connect(keyrelay.port, _ca(keyrelay))
    head = [(":method", "POST"), (":scheme", "https"), (":authority", "localhost")]
    conn.send_headers(1, [*head, (":path", "/nowhere")])
    sent, answered, body = 0, False, b""
    with sock:
        while sent < 64 * MiB and not answered:
            for _ in range(64):
                conn.send_data(1, b"x" * 16384)
                sent += 16384
            sock.sendall(conn.data_to_send())
            while select.select([sock], [], [], 0)[0] or sock.pending():
                data = sock.recv(65536)
                assert data, "connection closed before the answer"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        body += event.data
                    answered |= isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
    growth = peak_rss_kib(keyrelay.pid) - before
    print(f"sent {sent} bytes before the answer, peak RSS +{growth} KiB")
    assert answered and sent < 16 * MiB
    assert growth < 50 * 1024
    assert json.loads(body)["type"].endswith("/no-route")
    assert upstream.requests == []


def test_an_http2_refusal_of_a_request_without_body_keeps_its_status(
    keyrelay: KeyrelayProcess,
) -> None:
    status, _, frames = h2_request(keyrelay.port, _ca(keyrelay), "/nowhere", [])
    assert status == 404
    assert json.loads(b"".join(d for _, d in frames))["type"].endswith("/no-route")
