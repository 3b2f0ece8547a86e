"""Large bodies stream through without being held whole, and the request size limit holds."""

from __future__ import annotations

import hashlib
import http.client

import pytest
from conftest import KeyrelayFactory
from support.client import HttpClient
from support.transport import peak_rss_kib, rules_with_transport
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

MiB = 1024 * 1024
SIZE = 50 * MiB
PEAK_GROWTH_KIB = 25 * 1024  # half the body: more means something held it whole


def _pattern(size: int) -> bytes:
    block = hashlib.sha256(b"keyrelay").digest() * 2048  # 64 KiB, not compressible by accident
    return (block * (size // len(block) + 1))[:size]


def test_50_mib_upload_and_download_stream_byte_identical_in_bounded_memory(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory()
    assert relay.pid is not None
    body = _pattern(SIZE)
    digest = hashlib.sha256(body).hexdigest()

    def upload(req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_json({"sha256": hashlib.sha256(req.body).hexdigest(), "size": len(req.body)})

    def download(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.send_head(200, [("Content-Type", "image/png"), ("Content-Length", str(SIZE))])
        view = memoryview(body)
        for i in range(0, SIZE, MiB):
            w.write_raw(bytes(view[i : i + MiB]))

    upstream.route("POST", "/v1/images/edits", upload)
    upstream.route("GET", "/v1/files/file-bigcontent01/content", download)
    with HttpClient(relay.port, timeout=60) as client:
        client.get("/_keyrelay/health")  # warm up before the baseline
        baseline = peak_rss_kib(relay.pid)

        reply = client.post("/api/openai/images/edits", body, {"content-type": "image/png"})
        assert reply.json() == {"sha256": digest, "size": SIZE}
        after_upload = peak_rss_kib(relay.pid)

        resp = client.open("GET", "/api/openai/files/file-bigcontent01/content")
        h = hashlib.sha256()
        received = 0
        while piece := resp.read(MiB):
            h.update(piece)
            received += len(piece)
        assert (received, h.hexdigest()) == (SIZE, digest)
        after_download = peak_rss_kib(relay.pid)

    print(
        f"keyrelay VmHWM KiB: start {baseline}, after upload {after_upload}, "
        f"after download {after_download}"
    )
    assert after_upload - baseline < PEAK_GROWTH_KIB
    assert after_download - baseline < PEAK_GROWTH_KIB


def test_a_declared_length_over_the_limit_is_a_413_problem(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory(rules_with_transport({"max_request_bytes": "1 MiB"}))
    with HttpClient(relay.port) as client:
        reply = client.post("/api/openai/images/edits", b"x" * (MiB + 1))
        assert reply.status == 413
        problem = reply.json()
        assert problem["type"].endswith("/request-too-large")
        assert "1048576" in problem["detail"]
        assert client.post("/api/openai/images/edits", b"x" * MiB).status == 200
    assert [len(r.body) for r in upstream.requests] == [MiB]


def test_a_chunked_body_over_the_limit_never_reaches_the_upstream_whole(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    relay = keyrelay_factory(rules_with_transport({"max_request_bytes": "1 MiB"}))
    pieces = [b"y" * (256 * 1024)] * 8  # 2 MiB, no content-length
    with HttpClient(relay.port) as client:
        try:
            reply = client.request("POST", "/api/openai/images/edits", iter(pieces))
        except (http.client.HTTPException, OSError):
            pass  # the connection was cut: fine, as long as the upstream got no whole body
        else:
            assert reply.status >= 500
    assert upstream.requests == []  # the upstream never saw a complete request
    with HttpClient(relay.port) as client:  # and keyrelay still serves
        assert client.post("/api/openai/images/edits", b"ok").status == 200


@pytest.mark.parametrize("size", [0, 5, 3 * MiB])
def test_chunked_uploads_within_the_limit_arrive_whole(
    client: HttpClient, upstream: UpstreamServer, size: int
) -> None:
    data = _pattern(size)
    pieces = [data[i : i + 100_000] for i in range(0, size, 100_000)]
    reply = client.request("POST", "/api/openai/images/edits", iter(pieces))
    assert reply.status == 200
    request = upstream.only_request()
    assert request.body == data
    assert request.chunked
