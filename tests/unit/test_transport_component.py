"""Transport on flows: the size limit, what is streamed, a truthful response head, decoding,
the HTTP/2 offer and the timers (a few milliseconds long)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.connection import Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from addon import flowstate
from addon.config.rules import Rules, load
from addon.problems import Refusal
from addon.routing.router import Route, Router
from addon.transport.component import Transport

RULES = """
defaults:
  transport:
    timeouts: {connect: 0.005, first_byte: 0.005, idle: 5}
    max_request_bytes: 1000
    stream_requests_above: 100
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    allow: ["* api.openai.com/**"]
    credential: {header: authorization, key: {env: O}}
  plain:
    match: {prefix: /api/plain}
    upstream: https://plain.test
    allow: ["* plain.test/**"]
    credential: {header: authorization, key: {env: P}}
    transport: {upstream_http2: false, timeouts: {connect: 0, first_byte: 0, idle: 0}}
"""
SSE = b"data: hello\n\ndata: world\n\n"


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load(path, {})


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


def routed(
    transport: Transport, rules: Rules, path: str = "/api/openai/chat", **headers: str
) -> tuple[http.HTTPFlow, Refusal | None]:
    flow = tflow.tflow()
    flow.request.path = path
    flow.request.headers.clear()
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    route = Router(rules).route("POST", path, flow.request.headers.get)
    assert isinstance(route, Route)
    flowstate.of(flow)["provider"] = route.provider.name
    refusal = transport.requestheaders(flow, route)
    if refusal is None:
        transport.decide_body(flow)  # as relay.py does once every step has declared its needs
    return flow, refusal


def respond(flow: http.HTTPFlow, body: bytes, **headers: str) -> http.Response:
    flow.response = http.Response.make(200, body)
    for name, value in headers.items():
        flow.response.headers[name.replace("_", "-")] = value
    return flow.response


def test_a_body_over_the_limit_is_refused_from_its_head(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, refusal = routed(transport, rules, content_length="1001")
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.reason) == (413, "request-too-large")
        assert "1000 bytes" in refusal.detail
        respond(flow, b"keyrelay's own answer", content_type="text/event-stream")
        transport.responseheaders(flow)  # not routed on: nothing to stream or time
        assert flow.response is not None and not flow.response.stream

    run(scenario)


def test_large_or_unsized_bodies_stream_and_stop_at_the_limit(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        small, refusal = routed(transport, rules, content_length="100")
        assert refusal is None and not small.request.stream
        for headers in ({"content_length": "101"}, {"transfer_encoding": "chunked"}):
            flow, refusal = routed(transport, rules, **headers)
            stream = flow.request.stream
            assert refusal is None and callable(stream)
            assert list(stream(b"x" * 600)) == [b"x" * 600]
            assert list(stream(b"")) == []  # never an empty chunk: HTTP/1's last one
            assert list(stream(b"y" * 401)) == []  # 1001 bytes: cut, never passed on
            transport.error(flow)

    run(scenario)


def test_a_compressed_event_stream_is_decoded_chunk_by_chunk(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules)
        transport.request(flow)
        body = gzip.compress(SSE)
        response = respond(
            flow,
            body,
            content_type="text/event-stream",
            content_encoding="gzip",
            keep_alive="timeout=5",
            connection="keep-alive, x-hop",
            x_hop="1",
        )
        transport.responseheaders(flow)
        headers = response.headers
        assert callable(response.stream)
        for gone in ("content-encoding", "content-length", "keep-alive", "x-hop"):
            assert gone not in headers
        assert headers["connection"] == "keep-alive, x-hop"  # mitmproxy's framing reads it
        assert headers["transfer-encoding"] == "chunked"
        assert headers["x-accel-buffering"] == "no"
        assert headers["cache-control"] == "no-cache"
        out = b""
        for part in (body[:10], body[10:], b""):
            result = response.stream(part)
            out += result if isinstance(result, bytes) else b"".join(result)
        assert out == SSE
        transport.response(flow)

    run(scenario)


def test_a_corrupt_stream_is_cut_not_passed_on(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules)
        response = respond(flow, b"", content_type="text/event-stream", content_encoding="gzip")
        transport.responseheaders(flow)
        assert response.headers["transfer-encoding"] == "chunked"
        assert callable(response.stream)
        assert list(response.stream(b"not gzip at all")) == []
        assert "transfer-encoding" not in response.headers  # no last chunk: visibly cut
        transport.error(flow)

    run(scenario)


def test_a_small_buffered_body_is_decoded_whole(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules)
        response = respond(flow, gzip.compress(b'{"ok": true}'), content_type="application/json")
        response.headers["content-encoding"] = "gzip"
        transport.responseheaders(flow)
        assert not response.stream
        assert response.headers["content-encoding"] == "gzip"  # decoded once whole
        transport.response(flow)
        assert "content-encoding" not in response.headers
        assert response.raw_content == b'{"ok": true}'
        assert response.headers["content-length"] == str(len(b'{"ok": true}'))

    run(scenario)


def test_a_flow_transport_did_not_route_is_left_alone() -> None:
    async def scenario() -> None:
        flow = tflow.tflow()
        response = respond(flow, b"data", content_type="text/event-stream", keep_alive="1")
        Transport().responseheaders(flow)
        Transport().response(flow)
        assert not response.stream
        assert response.headers["keep-alive"] == "1"

    run(scenario)


@pytest.mark.parametrize(
    ("path", "headers", "host", "offer"),
    [
        ("/api/openai/chat", {}, "API.openai.com", (b"h2", b"http/1.1")),
        ("/api/openai/realtime", {"upgrade": "websocket"}, "api.openai.com", (b"http/1.1",)),
        ("/api/plain/x", {}, "plain.test", (b"http/1.1",)),
    ],
)
def test_http2_is_offered_upstream_unless_it_cannot_be_used(
    rules: Rules, path: str, headers: dict[str, str], host: str, offer: tuple[bytes, ...]
) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules, path, **headers)
        server = Server(address=(host, 443), tls=True)
        data = ServerConnectionHookData(server=server, client=flow.client_conn)
        transport.server_connect(data)
        assert server.alpn_offers == offer
        transport.server_connected(data)

    run(scenario)


def test_a_connection_not_accepted_in_time_is_cancelled_with_a_504_problem(
    rules: Rules,
) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules)
        server = Server(address=("api.openai.com", 443))
        data = ServerConnectionHookData(server=server, client=flow.client_conn)

        async def connecting() -> None:
            transport.server_connect(data)
            server.timestamp_start = time.time() - 1  # the slot was taken a while ago
            await asyncio.sleep(1)

        with pytest.raises(asyncio.CancelledError) as cancelled:
            await asyncio.create_task(connecting())
        assert "did not accept a connection" in str(cancelled.value.args[0])
        expired = transport.expired(flow)  # what the flow's error page says, as a value
        assert expired is not None
        assert (expired.status, expired.reason) == (504, "upstream-timeout")

    run(scenario)


def test_a_connection_made_in_time_is_not_cancelled(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        flow, _ = routed(transport, rules)
        server = Server(address=("api.openai.com", 443))
        data = ServerConnectionHookData(server=server, client=flow.client_conn)

        async def connecting() -> None:
            transport.server_connect(data)
            server.timestamp_start = time.time() - 1
            transport.server_connected(data)
            await asyncio.sleep(0.02)

        await asyncio.create_task(connecting())

    run(scenario)


def silent_and_answered(
    transport: Transport, rules: Rules, body: bytes, content_type: str
) -> tuple[http.HTTPFlow, http.HTTPFlow]:
    """Two routed flows whose requests are in: one upstream stays silent, one sends a head."""
    silent, _ = routed(transport, rules)
    answered, _ = routed(transport, rules)
    transport.request(silent)
    transport.request(answered)
    respond(answered, body, content_type=content_type)
    transport.responseheaders(answered)
    return silent, answered


def test_the_first_byte_timeout_ends_a_silent_upstream_only(rules: Rules) -> None:
    async def scenario() -> None:
        transport = Transport()
        silent, answered = silent_and_answered(transport, rules, b"{}", "application/json")
        await asyncio.sleep(0.02)
        assert flowstate.of(silent).get("timeout") == "first-byte"
        assert "timeout" not in flowstate.of(answered)
        transport.error(silent)
        transport.response(answered)

    run(scenario)


IDLE_SHORTER = """
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    allow: ["* api.openai.com/**"]
    credential: {header: authorization, key: {env: O}}
    transport: {timeouts: {connect: 0, first_byte: 0.4, idle: 0.1}}
"""


def test_one_timer_per_flow_keeps_each_limit_to_its_phase(tmp_path: Path) -> None:
    """The first-byte limit counts until a head comes, the idle limit from the head on; the
    flow's one timer is armed for the sooner of the two and re-armed for what is left."""
    path = tmp_path / "rules.yaml"
    path.write_text(IDLE_SHORTER)
    rules = load(path, {})

    async def scenario() -> None:
        transport = Transport()
        # The streaming one sends a head, then no byte: idle from there.
        silent, streaming = silent_and_answered(transport, rules, b"", "text/event-stream")
        await asyncio.sleep(0.25)
        assert "timeout" not in flowstate.of(silent)  # 0.1 s idle is not its limit
        assert flowstate.of(streaming).get("timeout") == "idle"  # not the first-byte 0.4 s
        await asyncio.sleep(0.3)
        assert flowstate.of(silent).get("timeout") == "first-byte"
        transport.error(silent)
        transport.error(streaming)

    run(scenario)


def test_a_body_declared_whole_then_refused_leaves_nothing_behind() -> None:
    """A step may declare that it reads the body (keep_whole) and a later one refuse: the
    decision never comes, and the flow's end takes the declaration."""
    from addon import flowlocal
    from addon.transport.component import keep_whole

    held = flowlocal.leftovers().get("transport.whole", 0)
    flow = tflow.tflow()
    keep_whole(flow)
    assert flowlocal.leftovers().get("transport.whole", 0) == held + 1
    Transport().error(flow)
    assert flowlocal.leftovers().get("transport.whole", 0) == held
