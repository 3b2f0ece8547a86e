"""Concurrency slots in Redis through the real mitmdump when things go wrong: a client that
goes away, an upstream that fails, Redis restarting or hanging. A slot that is not given back
counts against the limit until lease_seconds (an hour by default)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis as redislib
from support.client import HttpClient
from support.guard import rules
from support.redis_server import RedisServer
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

MODELS = "/api/openai/models"
SLOW = "/api/openai/slow"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def one_slot(redis: RedisServer, **backend: object) -> str:
    return rules(
        top={"limits_backend": {"redis": redis.url, **backend}},
        defaults={"limits": {"concurrent": 1}},
    )


def held_stream(upstream: UpstreamServer) -> threading.Event:
    """GET /v1/slow starts an event stream and holds it open until the event is set."""
    done = threading.Event()

    def slow(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_head(200, [("content-type", "text/event-stream")], chunked=True)
        w.write_chunk(b"data: started\n\n")
        done.wait(10)
        w.end()

    upstream.route("GET", "/v1/slow", slow)
    return done


def slot_comes_back(port: int, seconds: float = 5.0) -> list[int]:
    """Statuses of one request after another until one is admitted (or `seconds` passed)."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses.append(HttpClient(port).get(MODELS).status)
        if statuses[-1] == 200:
            break
        time.sleep(0.05)
    return statuses


def open_stream(port: int) -> socket.socket:
    """A raw client that sends a request for the held stream and reads its first event."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {SLOW} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"data: started" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_a_client_that_goes_away_mid_stream_gives_its_slot_back(
    keyrelay_factory, upstream, redis_server
) -> None:
    done = held_stream(upstream)
    proxy = keyrelay_factory(one_slot(redis_server))
    sock = open_stream(proxy.port)
    assert HttpClient(proxy.port).get(MODELS).status == 429  # the slot is taken
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # a reset, as when a browser tab closes
    try:
        assert slot_comes_back(proxy.port)[-1] == 200
    finally:
        done.set()


@pytest.mark.parametrize("failure", ["drop mid-stream", "refuse to connect"])
def test_an_upstream_that_fails_gives_the_slot_back(
    keyrelay_factory, upstream, redis_server, failure: str
) -> None:
    def drop(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_head(200, [("content-type", "text/event-stream")], chunked=True)
        w.write_chunk(b"data: started\n\n")
        raise ConnectionAbortedError("upstream dropped the stream")  # closes the connection

    upstream.route("GET", "/v1/slow", drop)
    port = None
    if failure == "refuse to connect":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proxy = keyrelay_factory(one_slot(redis_server), upstream_port=port)

    def status() -> int:
        with HttpClient(proxy.port) as c:
            reply = c.open("GET", SLOW)
            with contextlib.suppress(http.client.IncompleteRead):
                reply.read()  # cut short when the upstream drops
            return reply.status

    expected = 200 if port is None else 502
    for _ in range(3):
        statuses = [status()]
        deadline = time.monotonic() + 3
        while statuses[-1] == 429 and time.monotonic() < deadline:
            time.sleep(0.05)  # the slot is given back just after the failure
            statuses.append(status())
        assert statuses[-1] == expected, statuses  # a leaked slot stays taken for an hour


def test_a_request_refused_after_admission_gives_the_slot_back(
    keyrelay_factory, upstream, redis_server
) -> None:
    # No OpenAI key: admitted by the limits, then refused by the key store.
    proxy = keyrelay_factory(one_slot(redis_server), env={"OPENAI_API_KEY": None})
    with HttpClient(proxy.port) as c:
        statuses = [c.get(MODELS).status for _ in range(5)]
        if statuses[-1] == 503:  # the slot is given back just after the answer went out
            time.sleep(0.2)
            statuses.append(c.get(MODELS).status)
    assert statuses.count(429) <= 1 and statuses[-1] == 503, statuses
    assert not upstream.requests


def test_redis_restarted_while_idle_costs_no_request(
    keyrelay_factory, upstream, redis_server
) -> None:
    text = rules(
        top={"limits_backend": {"redis": redis_server.url}},
        defaults={"limits": {"rate": "1000/minute", "concurrent": 100}},
    )
    proxy = keyrelay_factory(text)
    with HttpClient(proxy.port) as c:
        assert [c.get(MODELS).status for _ in range(3)] == [200] * 3
        # Idle means the last slot is given back too: a release that met the dead Redis would
        # rightly open the breaker for the requests after it (the test raced that once).
        wait_until_no_slot_is_held(redis_server)
        redis_server.kill()
        redis_server.start()  # empty: its script cache too
        statuses = [c.get(MODELS).status for _ in range(10)]
    assert statuses == [200] * 10, (statuses, proxy.output()[-3000:])
    assert "store failed" not in proxy.output()


def wait_until_no_slot_is_held(redis: RedisServer, seconds: float = 5.0) -> None:
    with redislib.Redis.from_url(redis.url) as r:
        deadline = time.monotonic() + seconds
        while sum(r.zcard(k) for k in r.scan_iter("*:open")):
            assert time.monotonic() < deadline, "a concurrency slot was never given back"
            time.sleep(0.01)


def paused(redis: RedisServer) -> Callable[[], None]:
    """SIGSTOP: Redis hangs (connections are still accepted by the kernel); returns resume."""
    assert redis._proc is not None
    pid = redis._proc.pid
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


class Partition:
    """A TCP relay in front of Redis whose link can be cut (open connections reset, new ones
    refused) and restored on the same port, while Redis keeps its data."""

    def __init__(self, redis: RedisServer) -> None:
        self.target = ("127.0.0.1", redis.port)
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._serve()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        for sock in (self._listener, *self._open):  # shutdown wakes a thread blocked on it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def heal(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.target)
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_a_release_that_fails_while_redis_is_cut_off_is_tried_again(
    keyrelay_factory, upstream, redis_server
) -> None:
    done = held_stream(upstream)
    link = Partition(redis_server)
    text = rules(
        top={"limits_backend": {"redis": link.url, "timeout": 0.2}},
        defaults={"limits": {"concurrent": 1}},
    )
    proxy = keyrelay_factory(text)
    try:
        with HttpClient(proxy.port) as c:
            stream = c.open("GET", SLOW)
            assert stream.status == 200
            link.cut()
            done.set()
            stream.read()  # the stream ends: giving its slot back fails, Redis is unreachable
            time.sleep(0.5)  # the release fails and is waiting for its retry
            link.heal()
        # The slot is in Redis still (a release never ran): only a retry gives it back.
        assert slot_comes_back(proxy.port)[-1] == 200
    finally:
        link.cut()


def test_a_hung_redis_refuses_only_the_requests_it_cannot_decide(
    keyrelay_factory, upstream, redis_server
) -> None:
    text = rules(
        top={"limits_backend": {"redis": redis_server.url, "timeout": 0.2}},
        defaults={"limits": {"rate": "1000/minute"}},
    )
    proxy = keyrelay_factory(text)
    with HttpClient(proxy.port) as c:
        assert c.get(MODELS).status == 200
        resume = paused(redis_server)
        try:
            hung = c.get(MODELS)
        finally:
            resume()
        # No breaker for a timeout: the very next request is decided again.
        assert [c.get(MODELS).status for _ in range(3)] == [200] * 3
    assert hung.status == 503 and hung.json()["type"].endswith("/limits-unavailable")
    proxy.wait_for_output(r"limits: the store failed \(slow")
