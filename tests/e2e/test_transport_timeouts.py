"""Connect, first-byte and idle timeouts from rules.yaml, and a client leaving mid-stream."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import KeyrelayFactory
from support.answers import PROTOCOLS, ask
from support.client import HttpClient
from support.proxy import KeyrelayProcess
from support.transport import rules_with_transport
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, sse_response

LIMIT = 1.0  # seconds, for every timeout of the keyrelay under test


@pytest.fixture
def quick(keyrelay_factory: KeyrelayFactory) -> KeyrelayProcess:
    """A keyrelay whose connect, first-byte and idle timeouts are all one second."""
    timeouts = {"connect": LIMIT, "first_byte": LIMIT, "idle": LIMIT}
    return keyrelay_factory(rules_with_transport({"timeouts": timeouts}))


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connection's SYN goes unanswered
    (what a firewalled or overloaded host looks like) without needing any outside network."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # backlog 0 still queues one; a couple more make sure it is full
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    yield port
    for s in fillers:
        s.close()
    listener.close()


def _problem(reply_json: dict[str, object]) -> str:
    return str(reply_json["type"]).rsplit("/", 1)[-1]


def test_no_first_byte_in_time_is_a_504_problem(
    quick: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    def slow(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.sleep(3 * LIMIT)
        w.send_json({"late": True})

    upstream.route("POST", "/v1/messages", slow)
    with HttpClient(quick.port) as client:
        started = time.monotonic()
        reply = client.post("/api/anthropic/v1/messages", json={})
        took = time.monotonic() - started
        assert reply.status == 504
        assert reply.header("content-type") == "application/json"
        assert _problem(reply.json()) == "upstream-timeout"
        assert "anthropic" in str(reply.json()["detail"])
        assert took < 2.5 * LIMIT
        # The client connection is still usable, on a fresh upstream connection.
        upstream.route("POST", "/v1/messages", sse_response(["ok"]))
        assert client.post("/api/anthropic/v1/messages", json={}).body == b"data: ok\n\n"


def test_a_silent_stream_is_closed_after_the_idle_time(
    quick: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", sse_response(["one", "two"], gap=4 * LIMIT))
    with HttpClient(quick.port) as client:
        started = time.monotonic()
        resp = client.open("POST", "/api/anthropic/v1/messages", json={})
        assert resp.status == 200
        assert resp.read1() == b"data: one\n\n"
        with pytest.raises((http.client.IncompleteRead, OSError)):
            while resp.read1():
                pass
        assert time.monotonic() - started < 3 * LIMIT
    request = upstream.only_request()
    assert request.response_done.wait(10)
    assert request.response_aborted  # the upstream's next write found the connection closed


def test_a_stream_that_keeps_sending_is_never_cut(
    quick: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    events = [str(i) for i in range(8)]
    upstream.route("POST", "/v1/messages", sse_response(events, gap=LIMIT / 2))
    with HttpClient(quick.port) as client:
        reply = client.stream("POST", "/api/anthropic/v1/messages", json={})
    assert reply.body.count(b"data: ") == 8  # 3.5 s in all: longer than any single limit
    assert reply.chunks[-1][0] > 3 * LIMIT


def test_an_unanswered_connect_is_a_504_problem(
    keyrelay_factory: KeyrelayFactory, silent_listener: int
) -> None:
    relay = keyrelay_factory(
        rules_with_transport({"timeouts": {"connect": LIMIT}}), upstream_port=silent_listener
    )
    with HttpClient(relay.port) as client:
        started = time.monotonic()
        reply = client.post("/api/openai/chat/completions", json={})
        took = time.monotonic() - started
    assert reply.status == 504
    problem = reply.json()
    assert _problem(problem) == "upstream-timeout"
    assert "openai" in str(problem["detail"])
    assert str(silent_listener) not in reply.text  # the internal address stays inside
    assert LIMIT * 0.9 < took < 3 * LIMIT


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_tls_handshake_that_never_completes_is_a_504_within_the_connect_timeout(
    protocol: str, keyrelay_factory: KeyrelayFactory
) -> None:
    """The upstream accepts the TCP connection and never says a word: the connect timeout
    covers the handshake, the client hears at once and the upstream socket is closed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        relay = keyrelay_factory(
            rules_with_transport({"timeouts": {"connect": LIMIT}}),
            upstream_port=listener.getsockname()[1],
        )
        started = time.monotonic()
        answer = ask(protocol, relay, "/api/openai/chat/completions", [])
        took = time.monotonic() - started
        assert answer.status == 504, answer.body
        problem = answer.problem()
        assert _problem(problem) == "upstream-timeout"
        assert problem["detail"] == f"openai did not accept a connection within {LIMIT:g}s"
        assert LIMIT * 0.9 < took < 3 * LIMIT
        listener.settimeout(5)
        upstream_side, _ = listener.accept()
        with upstream_side:
            upstream_side.settimeout(5)
            hello = upstream_side.recv(65536)  # the ClientHello, never answered
            assert hello[:1] == b"\x16"
            assert upstream_side.recv(65536) == b""  # then keyrelay closed the socket


def test_without_a_connect_timeout_the_first_byte_limit_ends_a_stalled_handshake(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        relay = keyrelay_factory(
            rules_with_transport({"timeouts": {"connect": 0, "first_byte": LIMIT}}),
            upstream_port=listener.getsockname()[1],
        )
        started = time.monotonic()
        answer = ask("h1", relay, "/api/openai/chat/completions", [])
        assert time.monotonic() - started < 3 * LIMIT
    assert answer.status == 504, answer.body
    assert answer.problem()["detail"] == f"openai sent no response within {LIMIT:g}s"


def test_a_client_leaving_mid_stream_ends_the_upstream_stream(
    keyrelay: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", sse_response([str(i) for i in range(50)], gap=0.1))
    mark = keyrelay.mark()
    client = HttpClient(keyrelay.port)
    resp = client.open("POST", "/api/anthropic/v1/messages", json={})
    assert resp.read1() == b"data: 0\n\n"
    client.close()
    request = upstream.wait_for_requests(1)[0]
    assert request.response_done.wait(3)  # far sooner than the 5 s the whole stream takes
    assert request.response_aborted
    keyrelay.wait_for_output(r"server disconnect", since=mark)
    assert "Traceback" not in keyrelay.output(since=mark)
