"""Compressed upstream responses reach the client decoded, under consistent headers, whether
streamed or buffered, and binary bodies arrive byte-identical."""

from __future__ import annotations

import http.client

import pytest
from support.client import HttpClient
from support.transport import COMPRESSORS
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer, bytes_response

PIECES = [b'data: {"delta": "%d"}\n\n' % i * 20 for i in range(5)]
PLAIN = b"".join(PIECES)


@pytest.mark.parametrize("coding", sorted(COMPRESSORS))
def test_streamed_compressed_response_is_decoded_chunk_by_chunk(
    client: HttpClient, upstream: UpstreamServer, coding: str
) -> None:
    wire = COMPRESSORS[coding](PIECES)

    def handler(req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_chunks(
            wire,
            gap=0.3,
            content_type="text/event-stream",
            headers=[("Content-Encoding", coding)],
        )

    upstream.route("POST", "/v1/chat/completions", handler)
    reply = client.stream("POST", "/api/openai/chat/completions", json={"stream": True})

    assert reply.status == 200
    assert reply.body == PLAIN
    assert reply.header("content-encoding") is None
    assert reply.header("content-length") is None
    assert reply.header("transfer-encoding") == "chunked"
    # Decoded as it came: the first piece arrived well before the last.
    assert reply.chunks[-1][0] - reply.chunks[0][0] > 0.6
    assert upstream.only_request().header("accept-encoding") == "identity"


@pytest.mark.parametrize("coding", sorted(COMPRESSORS))
def test_buffered_compressed_response_is_decoded_with_its_true_length(
    client: HttpClient, upstream: UpstreamServer, coding: str
) -> None:
    wire = b"".join(COMPRESSORS[coding](PIECES))
    upstream.route(
        "GET",
        "/v1/models",
        bytes_response(
            wire, headers=[("Content-Encoding", coding)], content_type="application/json"
        ),
    )
    reply = client.get("/api/openai/models")
    assert reply.status == 200
    assert reply.body == PLAIN
    assert reply.header("content-encoding") is None
    assert reply.header("content-length") == str(len(PLAIN))
    # The connection is still good for the next request (no stale length left behind).
    assert client.get("/api/openai/models").body == PLAIN
    assert client.connections_opened == 1


def test_gzip_then_br_layers_are_all_undone(client: HttpClient, upstream: UpstreamServer) -> None:
    gz = b"".join(COMPRESSORS["gzip"]([PLAIN]))
    wire = b"".join(COMPRESSORS["br"]([gz]))
    upstream.route(
        "GET",
        "/v1/models",
        bytes_response(wire, headers=[("Content-Encoding", "gzip, br")], content_type="text/plain"),
    )
    reply = client.get("/api/openai/models")
    assert (reply.body, reply.header("content-encoding")) == (PLAIN, None)


def test_unknown_encoding_passes_through_labelled(
    client: HttpClient, upstream: UpstreamServer
) -> None:
    wire = b"\x00\x01compressed-somehow\xff"
    upstream.route(
        "GET",
        "/v1/models",
        bytes_response(wire, headers=[("Content-Encoding", "compress")], content_type="text/plain"),
    )
    reply = client.get("/api/openai/models")
    assert (reply.body, reply.header("content-encoding")) == (wire, "compress")


def test_corrupt_stream_is_cut_not_relabelled(client: HttpClient, upstream: UpstreamServer) -> None:
    good = COMPRESSORS["gzip"](PIECES)
    upstream.route(
        "POST",
        "/v1/chat/completions",
        lambda _r, w: w.send_chunks(
            [good[0], b"this is not gzip at all" * 10, good[1]],
            content_type="text/event-stream",
            headers=[("Content-Encoding", "gzip")],
        ),
    )
    # The client must see a broken body (no last chunk), never a clean end of false bytes.
    resp = client.open("POST", "/api/openai/chat/completions", json={})
    received = b""
    with pytest.raises(http.client.IncompleteRead):
        while piece := resp.read1():
            received += piece
    assert received == PIECES[0]  # the good part, and nothing decoded from the garbage


@pytest.mark.parametrize("size", [4096, 3 * 1024 * 1024])  # buffered, and streamed by length
def test_binary_audio_arrives_byte_identical(
    client: HttpClient, upstream: UpstreamServer, size: int
) -> None:
    audio = (bytes(range(256)) * (size // 256 + 1))[:size]
    upstream.route(
        "POST", "/v1/text-to-speech/v1", bytes_response(audio, content_type="audio/mpeg")
    )
    reply = client.post("/api/elevenlabs/v1/text-to-speech/v1", json={"text": "x"})
    assert reply.status == 200
    assert reply.body == audio
    assert reply.header("content-length") == str(size)
