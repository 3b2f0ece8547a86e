"""Self-tests of the end-to-end harness (tests/support), not of keyrelay's behaviour.

The proxy-process tests run plain mitmdump in reverse mode to the fake upstream, so they hold
whether or not the addon works yet.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from support.client import HttpClient, Reply, raw_exchange
from support.proxy import (
    LISTENING_RE,
    TEST_KEYS,
    KeyrelayProcess,
    ProxyStartError,
    child_environment,
)
from support.tls import PROVIDER_HOSTS, TlsMaterial, make_test_ca
from support.upstream import (
    RecordedRequest,
    ResponseWriter,
    UpstreamServer,
    bytes_response,
    chunked_response,
    json_response,
    ndjson_response,
    sse_response,
)

MITMDUMP = str(Path(sys.executable).parent / "mitmdump")


def direct(
    upstream: UpstreamServer, tls: TlsMaterial, host: str = "api.anthropic.com"
) -> HttpClient:
    """A client straight to the upstream over TLS, verifying `host` against the test CA."""
    return HttpClient(upstream.port, tls=tls.client_context(), server_hostname=host)


def plain_mitmdump(upstream: UpstreamServer, tls: TlsMaterial, **kwargs: object) -> KeyrelayProcess:
    """The proxy harness around mitmdump without the addon, reverse-proxying to the upstream."""
    return KeyrelayProcess(
        upstream_port=upstream.port,
        ca_file=tls.ca_cert,
        command=[MITMDUMP, "--mode", f"reverse:https://localhost:{upstream.port}"],
        **kwargs,  # type: ignore[arg-type]
    )


def gaps(reply: Reply) -> list[float]:
    times = [t for t, _ in reply.chunks]
    return [b - a for a, b in itertools.pairwise(times)]


# -- tls ------------------------------------------------------------------------------------------
def test_server_certificate_covers_provider_hosts_and_extras(tmp_path: Path) -> None:
    tls = make_test_ca(tmp_path, extra_names=["extra.example", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    assert {*PROVIDER_HOSTS, "localhost", "extra.example"} <= dns
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert tls.ca_cert.name == "ca.pem"


def test_tls_handshake_verifies_every_provider_name(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    for host in (*PROVIDER_HOSTS, "localhost"):
        with direct(upstream, test_ca, host) as c:
            assert c.get("/").status == 200
    assert [r.sni for r in upstream.requests] == [*PROVIDER_HOSTS, "localhost"]


def test_tls_rejects_a_name_not_in_the_certificate(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    with (
        direct(upstream, test_ca, "api.example.com") as c,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        c.get("/")


# -- upstream: recording ------------------------------------------------------------------------
def test_upstream_records_chunked_request_exactly(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    headers = [("X-Dup", "one"), ("content-type", "text/plain"), ("X-Dup", "two")]
    with direct(upstream, test_ca) as c:
        reply = c.request("POST", "/v1/x?a=1&b=%2F&a=2", [b"hello ", b"", b"world"], headers)
    assert reply.status == 200
    req = upstream.only_request()
    assert req.method == "POST"
    assert req.target == "/v1/x?a=1&b=%2F&a=2"
    assert (req.path, req.query) == ("/v1/x", "a=1&b=%2F&a=2")
    assert req.chunked and req.body == b"hello world"
    assert req.headers == [
        ("Host", f"api.anthropic.com:{upstream.port}"),
        ("X-Dup", "one"),
        ("content-type", "text/plain"),
        ("X-Dup", "two"),
        ("Transfer-Encoding", "chunked"),
    ]
    assert req.header_all("x-dup") == ["one", "two"]
    assert req.sni == "api.anthropic.com"
    # The default handler echoes the record.
    echoed = reply.json()
    assert echoed["target"] == req.target and echoed["body"] == "hello world"
    assert echoed["headers"][1] == ["X-Dup", "one"]


def test_upstream_keep_alive_serves_many_requests_on_one_connection(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    with direct(upstream, test_ca) as c:
        for i in range(20):
            body = f"body-{i}".encode()
            reply = c.request("POST", f"/n/{i}", [body] if i % 2 else body)
            assert reply.json()["body"] == f"body-{i}"
        assert c.connections_opened == 1
    reqs = upstream.requests
    assert [r.index_on_connection for r in reqs] == list(range(20))
    assert len({r.connection_id for r in reqs}) == 1
    assert [r.chunked for r in reqs] == [bool(i % 2) for i in range(20)]


def test_upstream_handles_trailers_expect_and_connection_close(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    payload = (
        b"POST /t HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    ctx = test_ca.client_context()
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as raw:
        tls = ctx.wrap_socket(raw, server_hostname="api.openai.com")
        tls.sendall(payload)
        received = b""
        while piece := tls.recv(65536):
            received += piece
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    req = upstream.only_request()
    assert (req.body, req.trailers) == (b"abc", [("X-Trailer", "yes")])


def test_upstream_rejects_ambiguous_framing(upstream: UpstreamServer) -> None:
    plain = UpstreamServer(None).start()
    try:
        reply = raw_exchange(
            plain.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert plain.only_request().error == "both transfer-encoding and content-length"
    finally:
        plain.stop()


# -- upstream: programmable answers ------------------------------------------------------------
def test_routes_match_method_longest_prefix_and_host(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    upstream.route(None, "/v1", json_response({"r": "v1"}))
    upstream.route("POST", "/v1/messages", json_response({"r": "messages"}, 201, {"X-R": "1"}))
    upstream.route(None, "/v1", json_response({"r": "openai"}), host="api.openai.com")
    upstream.route("GET", "/bin", bytes_response(b"\x00\x01", 206, content_type="audio/mpeg"))
    with direct(upstream, test_ca) as c:
        r = c.request("POST", "/v1/messages?beta=true", b"{}")
        assert (r.status, r.json(), r.header("x-r")) == (201, {"r": "messages"}, "1")
        assert c.get("/v1/messages").json() == {"r": "v1"}
        assert c.get("/v2").json()["path"] == "/v2"  # echo default
        r = c.get("/bin")
        assert (r.status, r.body, r.header("content-type")) == (206, b"\x00\x01", "audio/mpeg")
    with direct(upstream, test_ca, "api.openai.com") as c:
        assert c.get("/v1/models").json() == {"r": "openai"}


def test_streams_are_chunked_without_content_length(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    upstream.route("GET", "/nd", ndjson_response([{"a": 1}, {"b": 2}], gap=0.05))
    upstream.route("GET", "/bin", chunked_response([b"\x00" * 10, b"\xff" * 5], gap=0.05))
    with direct(upstream, test_ca) as c:
        nd = c.stream("GET", "/nd")
        assert nd.body == b'{"a": 1}\n{"b": 2}\n'
        assert nd.header("content-type") == "application/x-ndjson"
        assert nd.header("transfer-encoding") == "chunked" and nd.header("content-length") is None
        binary = c.stream("GET", "/bin")
        assert binary.body == b"\x00" * 10 + b"\xff" * 5
        assert c.connections_opened == 1


def test_sse_events_arrive_with_their_gaps(upstream: UpstreamServer, test_ca: TlsMaterial) -> None:
    events = [{"event": "ping", "data": {"n": i}} for i in range(4)]
    upstream.route("POST", "/sse", sse_response(events, gap=0.3))
    with direct(upstream, test_ca) as c:
        reply = c.stream("POST", "/sse", b"{}")
    assert reply.header("content-type") == "text/event-stream"
    assert [d for _, d in reply.chunks] == [
        f'event: ping\ndata: {{"n": {i}}}\n\n'.encode() for i in range(4)
    ]
    assert all(0.25 < g < 1.0 for g in gaps(reply)), gaps(reply)


def test_concurrent_streams_do_not_block_each_other(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    upstream.route("GET", "/sse", sse_response([f"e{i}" for i in range(5)], gap=0.3))
    replies: dict[int, Reply] = {}

    def fetch(n: int) -> None:
        with direct(upstream, test_ca) as c:
            replies[n] = c.stream("GET", f"/sse?n={n}")

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - start
    assert sorted(replies) == [0, 1, 2]
    # One stream takes 1.2 s; served one after another, three would take 3.6 s.
    assert elapsed < 2.4, elapsed
    first_ends = max(r.chunks[0][0] for r in replies.values())
    assert first_ends < 0.9  # every stream's first event came before any stream finished
    assert len({r.connection_id for r in upstream.requests}) == 3


def test_handler_errors_are_reported_and_answered_500(
    upstream_server: UpstreamServer, test_ca: TlsMaterial
) -> None:
    upstream_server.reset()

    def broken(_req: RecordedRequest, _w: ResponseWriter) -> None:
        raise ValueError("handler bug")

    upstream_server.set_default(broken)
    with direct(upstream_server, test_ca) as c:
        assert c.get("/").status == 500
    assert "ValueError: handler bug" in upstream_server.errors[0]
    upstream_server.reset()


def test_stop_ends_open_streams_promptly(test_ca: TlsMaterial) -> None:
    server = UpstreamServer(test_ca).start()
    server.route(None, "/", sse_response(["x"] * 100, gap=1.0))
    c = direct(server, test_ca)
    resp = c.open("GET", "/slow")
    assert resp.read1().startswith(b"data: x")
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    assert server.requests[0].response_aborted
    c.close()


def test_wait_for_requests_times_out_with_a_clear_message(upstream: UpstreamServer) -> None:
    with pytest.raises(AssertionError, match="upstream got 0 requests, expected 1"):
        upstream.wait_for_requests(1, timeout=0.1)


# -- proxy process (plain mitmdump) ------------------------------------------------------------
def test_child_environment_drops_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "real-anthropic")
    monkeypatch.setenv("FAL_KEY_SECRET", "real-fal-secret")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "real-token")
    monkeypatch.setenv("KEYRELAY_HOST", "0.0.0.0")
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere")
    env = child_environment(env={"EXTRA": "1", "OPENAI_API_KEY": None})
    assert env["ANTHROPIC_API_KEY"] == TEST_KEYS["ANTHROPIC_API_KEY"]
    assert "OPENAI_API_KEY" not in env and env["EXTRA"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    for name in ("FAL_KEY_SECRET", "SOME_SERVICE_TOKEN", "KEYRELAY_HOST", "HTTPS_PROXY"):
        assert name not in env
    assert "PATH" in env
    keys = list(TEST_KEYS.values())
    assert not any(a in b for a in keys for b in keys if a is not b)


def test_proxy_process_round_trip_and_logs(upstream: UpstreamServer, test_ca: TlsMaterial) -> None:
    with plain_mitmdump(upstream, test_ca) as proxy:
        assert proxy.alive() and proxy.url == f"http://127.0.0.1:{proxy.port}"
        assert LISTENING_RE.search(proxy.output())
        upstream.clear_requests()  # drop the start-up probe
        mark = proxy.mark()
        with HttpClient(proxy.port) as c:
            for i in range(3):
                assert c.post(f"/k/{i}", b"x").status == 200
            assert c.connections_opened == 1
        proxy.wait_for_output(r"POST https://localhost:\d+/k/2", since=mark)
        assert "/k/0" not in proxy.output(proxy.mark())
        reqs = upstream.wait_for_requests(3)
        # mitmproxy keeps one upstream connection per client connection.
        assert len({r.connection_id for r in reqs}) == 1
        assert proxy.stop() == 0
    assert not proxy.alive()


def test_two_proxy_processes_run_side_by_side(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    with plain_mitmdump(upstream, test_ca) as a, plain_mitmdump(upstream, test_ca) as b:
        assert a.port != b.port
        for p in (a, b):
            with HttpClient(p.port) as c:
                assert c.get("/").status == 200


def test_proxy_start_failure_includes_output(
    upstream: UpstreamServer, test_ca: TlsMaterial
) -> None:
    proxy = plain_mitmdump(upstream, test_ca, extra_args=["-s", "/nonexistent/addon.py"])
    with pytest.raises(ProxyStartError, match="No such script"):
        proxy.start()
    assert proxy.returncode == 1


def test_proxy_exit_after_binding_is_a_start_failure(
    upstream: UpstreamServer, test_ca: TlsMaterial, tmp_path: Path
) -> None:
    # mitmdump binds and prints the listening line, then exits because start-up logged an error.
    bad = tmp_path / "bad_addon.py"
    bad.write_text("raise RuntimeError('addon import failed')\n")
    proxy = plain_mitmdump(upstream, test_ca, extra_args=["-s", str(bad)])
    with pytest.raises(ProxyStartError, match="exited during start-up") as info:
        proxy.start()
    assert "addon import failed" in str(info.value)
    assert "listening at" in str(info.value)


def test_client_closes_when_not_keep_alive(upstream: UpstreamServer, test_ca: TlsMaterial) -> None:
    c = HttpClient(upstream.port, tls=test_ca.client_context(), server_hostname="localhost")
    c.keep_alive = False
    assert c.get("/a").status == 200
    assert c.get("/b").status == 200
    assert c.connections_opened == 2
    assert [r.header("connection") for r in upstream.requests] == ["close", "close"]


# -- the session keyrelay fixture (needs the addon to load) ------------------------------------
def test_keyrelay_fixture_is_running(keyrelay: KeyrelayProcess, TEST_KEYS: dict[str, str]) -> None:
    assert keyrelay.alive() and keyrelay.port > 0
    assert keyrelay.env["ANTHROPIC_API_KEY"] == TEST_KEYS["ANTHROPIC_API_KEY"]
    assert keyrelay.rules_path is not None and keyrelay.rules_path.parent == keyrelay.workdir
