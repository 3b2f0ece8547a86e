"""Streams keep their timing and bytes through the real keyrelay: SSE, NDJSON, chunked audio,
statuses and headers passed through, one upstream connection for many requests."""

from __future__ import annotations

import itertools
import json

from support.client import HttpClient
from support.proxy import KeyrelayProcess
from support.upstream import (
    UpstreamServer,
    bytes_response,
    chunked_response,
    ndjson_response,
    sse_response,
)

GAP = 0.4  # seconds between upstream events; assertions use generous ratios of it


def _arrivals(reply_chunks: list[tuple[float, bytes]], marker: bytes) -> list[float]:
    """When each occurrence of marker arrived (a read may hold several)."""
    times = []
    for at, data in reply_chunks:
        times += [at] * data.count(marker)
    return times


def test_sse_events_arrive_as_the_upstream_sends_them(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    events = [{"event": "content_block_delta", "data": {"i": i}} for i in range(4)]
    upstream.route("POST", "/v1/messages", sse_response(events, gap=GAP, first_delay=0.1))
    reply = client.stream("POST", "/api/anthropic/v1/messages", json={"stream": True})

    assert reply.status == 200
    assert reply.body.count(b"event: content_block_delta") == 4
    times = _arrivals(reply.chunks, b"event: ")
    assert len(times) == 4
    # The first event must not wait for the end: it arrives about 3 gaps before the last.
    assert times[-1] - times[0] > 2 * GAP
    for earlier, later in itertools.pairwise(times):
        assert later - earlier > GAP / 2
    assert reply.header("x-accel-buffering") == "no"
    assert reply.header("cache-control") == "no-cache"
    assert reply.header("content-encoding") is None


def test_ndjson_lines_arrive_one_by_one(client: HttpClient, upstream: UpstreamServer) -> None:
    items = [{"type": "heartbeat"}, {"type": "output", "n": 1}, {"type": "done"}]
    upstream.route("GET", "/tasks/t1/stream", ndjson_response(items, gap=GAP))
    reply = client.stream(
        "GET",
        "/api/inference/proxy",
        headers={
            "x-inf-target-url": "https://api.inference.sh/tasks/t1/stream",
            "accept": "application/x-ndjson",
        },
    )
    assert reply.status == 200
    assert [json.loads(line) for line in reply.body.splitlines()] == items
    times = _arrivals(reply.chunks, b"\n")
    assert times[-1] - times[0] > GAP


def test_chunked_audio_is_streamed_byte_identical(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    frames = [bytes(range(256)) * 16 + bytes([i]) for i in range(5)]  # binary, all byte values
    upstream.route(
        "POST",
        "/v1/text-to-speech/voice1/stream",
        chunked_response(frames, gap=GAP / 2, content_type="audio/mpeg"),
    )
    reply = client.stream(
        "POST", "/api/elevenlabs/v1/text-to-speech/voice1/stream", json={"text": "hi"}
    )
    assert reply.status == 200
    assert reply.header("content-type") == "audio/mpeg"
    assert reply.body == b"".join(frames)
    assert reply.chunks[-1][0] - reply.chunks[0][0] > GAP  # not delivered in one piece


def test_statuses_headers_and_error_bodies_pass_through(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error"}}'
    upstream.route(
        "POST",
        "/v1/messages",
        bytes_response(
            body,
            429,
            [("retry-after", "17"), ("x-request-id", "req_1"), ("keep-alive", "timeout=5")],
            "application/json",
        ),
    )
    reply = client.post("/api/anthropic/v1/messages", json={})
    assert reply.status == 429
    assert reply.header("retry-after") == "17"
    assert reply.header("x-request-id") == "req_1"
    assert reply.header("keep-alive") is None  # hop-by-hop: the upstream's, not ours
    assert reply.body == body
    assert reply.header("content-length") == str(len(body))


def test_many_requests_on_one_client_connection_share_one_upstream_connection(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    upstream.route("POST", "/v1/messages", sse_response(["a", "b"]))
    for _ in range(12):
        reply = client.stream("POST", "/api/anthropic/v1/messages", json={})
        assert reply.body == b"data: a\n\ndata: b\n\n"
    for _ in range(3):
        assert client.get("/api/anthropic/v1/models").status == 200
    requests = upstream.wait_for_requests(15)
    assert len({r.connection_id for r in requests}) == 1
    assert client.connections_opened == 1


def test_large_response_with_a_length_is_streamed_and_small_one_buffered(
    keyrelay: KeyrelayProcess, client: HttpClient, upstream: UpstreamServer
) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, over the default 1 MiB buffer threshold
    upstream.route("GET", "/v1/models/big", bytes_response(big, content_type="application/json"))
    upstream.route(
        "GET", "/v1/models/small", bytes_response(b"{}", content_type="application/json")
    )
    mark = keyrelay.mark()
    assert client.get("/api/openai/models/big").body == big
    assert client.get("/api/openai/models/small").body == b"{}"
    keyrelay.wait_for_output(r"Streaming response from api\.openai\.com", since=mark)
    assert keyrelay.output(since=mark).count("Streaming response from") == 1
