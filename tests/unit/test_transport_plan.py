"""The pure parts of transport fidelity: decoders, the transport section, stream decisions."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
from mitmproxy import http
from support.transport import COMPRESSORS

from addon.config.model import ConfigError, read
from addon.config.transport import Timeouts, TransportSpec
from addon.problems import Refusal
from addon.transport import decoding
from addon.transport.component import decode_buffered, fix_head
from addon.transport.plan import BodyLimit, Pipe, ResponsePlan, plan_response, request_plan

PLAIN = b"".join(b"line %d of a body that compresses well\n" % i for i in range(200))


def _feed_bytewise(decoder: decoding.Decoder, wire: bytes) -> bytes:
    return b"".join(decoder(wire[i : i + 1]) for i in range(len(wire))) + decoder(b"")


@pytest.mark.parametrize("coding", sorted(COMPRESSORS))
def test_each_coding_decodes_whole_and_byte_by_byte(coding: str) -> None:
    wire = b"".join(COMPRESSORS[coding]([PLAIN[:1000], PLAIN[1000:]]))
    assert decoding.decode_all(coding, wire) == PLAIN
    assert _feed_bytewise(decoding.Decoder(coding), wire) == PLAIN


def test_gzip_members_one_after_another_all_decode() -> None:
    wire = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decoding.decode_all("gzip", wire) == b"first second"


def test_raw_deflate_is_accepted_like_browsers_do() -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    wire = c.compress(PLAIN) + c.flush()
    assert decoding.decode_all("deflate", wire) == PLAIN


def test_layered_codings_are_undone_in_reverse_order() -> None:
    wire = b"".join(COMPRESSORS["br"]([gzip.compress(PLAIN)]))
    assert decoding.decode_all("gzip, br", wire) == PLAIN
    assert decoding.codings("identity, gzip,BR") == ("gzip", "br")
    assert decoding.can_decode("gzip, br") and not decoding.can_decode("gzip, compress")


@pytest.mark.parametrize("coding", sorted(COMPRESSORS))
def test_corrupt_or_cut_input_reports_once_and_emits_nothing_more(coding: str) -> None:
    errors: list[str] = []
    decoder = decoding.Decoder(coding, errors.append)
    wire = b"".join(COMPRESSORS[coding]([PLAIN]))
    decoder(wire[: len(wire) // 2])
    assert decoder(b"") == b""  # cut short: the end is an error, not a clean finish
    assert decoder(b"more") == b""
    assert len(errors) == 1 and "content-encoding" in errors[0]
    with pytest.raises(decoding.DecodeError):
        decoding.decode_all(coding, b"\x00garbage that is no compressed stream at all" * 3)


def test_transport_section_defaults_sizes_and_errors() -> None:
    raw = {
        "timeouts": {"connect": 2, "first_byte": 0, "idle": 1.5},
        "max_request_bytes": "2 MiB",
        "stream_requests_above": 1000,
        "buffer_responses_up_to": "64kib",
        "upstream_http2": False,
    }
    t = read(TransportSpec, raw, "rules.yaml", "providers.x.transport")
    assert t.timeouts == Timeouts(connect=2.0, first_byte=0.0, idle=1.5)
    assert (t.max_request_bytes, t.stream_requests_above) == (2 * 1024 * 1024, 1000)
    assert (t.buffer_responses_up_to, t.upstream_http2) == (64 * 1024, False)
    for bad, key in [
        ({"max_request_bytes": "lots"}, "max_request_bytes"),
        ({"timeouts": {"idle": -1}}, "timeouts.idle"),
        ({"timeouts": {"total": 60}}, "timeouts.total"),
        ({"stream_everything": True}, "stream_everything"),
    ]:
        with pytest.raises(ConfigError) as raised:
            read(TransportSpec, bad, "rules.yaml", "providers.x.transport")
        assert raised.value.file == "rules.yaml"
        assert raised.value.key == f"providers.x.transport.{key}"


def test_request_plan_refuses_streams_or_buffers_by_declared_length() -> None:
    t = TransportSpec(max_request_bytes=100, stream_requests_above=10)
    refusal = request_plan("openai", t, "101")
    assert isinstance(refusal, Refusal) and refusal.status == 413
    assert "openai" in refusal.detail and "100 bytes" in refusal.detail
    assert request_plan("openai", t, "100") is True
    assert request_plan("openai", t, "10") is False
    assert request_plan("openai", t, None) is True  # unknown length: streamed and counted


def test_body_limit_passes_until_the_limit_then_reports_once() -> None:
    hits: list[int] = []
    limit = BodyLimit(5, lambda: hits.append(1))
    assert limit(b"abc") == [b"abc"]
    assert limit(b"") == []  # never an empty chunk: HTTP/1 would read it as the last one
    assert limit(b"de") == [b"de"]
    assert limit(b"f") == []
    assert limit(b"g") == []
    assert hits == [1]


def test_pipe_never_yields_an_empty_chunk_and_notes_each_arrival() -> None:
    arrivals: list[int] = []
    pipe = Pipe(decoding.Decoder("gzip"), lambda: arrivals.append(1))
    wire = gzip.compress(b"hello")
    assert pipe(wire[:5]) == []  # the gzip header alone decodes to nothing
    assert pipe(wire[5:]) == [b"hello"]
    assert pipe(b"") == []
    assert arrivals == [1, 1]
    assert Pipe(None, lambda: None)(b"x") == [b"x"]


@pytest.mark.parametrize(
    ("status", "headers", "has_body", "expected"),
    [
        (200, {"content-type": "text/event-stream"}, True, ResponsePlan(True, None)),
        (
            200,
            {"content-type": "application/x-ndjson", "content-length": "5"},
            True,
            ResponsePlan(True, None),
        ),
        (
            200,
            {"content-type": "audio/mpeg", "content-length": "5"},
            True,
            ResponsePlan(True, None),
        ),
        (
            200,
            {"content-type": "application/json", "content-length": "5"},
            True,
            ResponsePlan(False, None),
        ),
        (
            200,
            {"content-type": "application/json", "content-length": "11"},
            True,
            ResponsePlan(True, None),
        ),
        (200, {"content-type": "application/json"}, True, ResponsePlan(True, None)),
        (
            200,
            {"content-length": "5", "content-encoding": "gzip"},
            True,
            ResponsePlan(False, "gzip"),
        ),
        (200, {"content-encoding": "compress"}, True, ResponsePlan(True, None)),
        (101, {"upgrade": "websocket"}, True, ResponsePlan(False, None)),
        (204, {}, False, ResponsePlan(False, None)),
    ],
)
def test_plan_response(
    status: int, headers: dict[str, str], has_body: bool, expected: ResponsePlan
) -> None:
    t = TransportSpec(buffer_responses_up_to=10)
    assert plan_response(t, status, headers.items(), has_body=has_body) == expected


def test_fix_head_for_a_decoded_sse_stream_to_an_http1_client() -> None:
    response = http.Response.make(
        200,
        b"",
        {
            "content-type": "text/event-stream",
            "content-encoding": "gzip",
            "content-length": "123",
            "keep-alive": "timeout=5",
            "connection": "keep-alive, x-internal",
            "x-internal": "1",
            "retry-after": "3",
        },
    )
    fix_head(response, ResponsePlan(True, "gzip"), http1_client=True)
    h = response.headers
    assert "content-encoding" not in h and "content-length" not in h
    assert h["transfer-encoding"] == "chunked"
    assert (h["x-accel-buffering"], h["cache-control"]) == ("no", "no-cache")
    assert "keep-alive" not in h and "x-internal" not in h
    assert h["retry-after"] == "3" and h["connection"] == "keep-alive, x-internal"


def test_fix_head_keeps_a_websocket_handshake_and_an_explicit_cache_policy() -> None:
    handshake = http.Response.make(101, b"", {"upgrade": "websocket", "connection": "upgrade"})
    fix_head(handshake, ResponsePlan(False, None), http1_client=True)
    assert handshake.headers["upgrade"] == "websocket"
    sse = http.Response.make(
        200, b"", {"content-type": "text/event-stream", "cache-control": "no-store"}
    )
    fix_head(sse, ResponsePlan(True, None), http1_client=True)
    assert sse.headers["cache-control"] == "no-store"
    assert "transfer-encoding" not in sse.headers  # an HTTP/1 upstream's framing is left alone


def test_decode_buffered_fixes_the_length_or_leaves_a_corrupt_body_labelled() -> None:
    good = http.Response.make(200, b"", {"content-encoding": "gzip"})
    good.raw_content = gzip.compress(PLAIN)  # make() would encode the content once more
    decode_buffered(good)
    assert good.raw_content == PLAIN
    assert good.headers["content-length"] == str(len(PLAIN))
    assert "content-encoding" not in good.headers
    bad = http.Response.make(200, b"", {"content-encoding": "gzip"})
    bad.raw_content = b"not gzip"
    decode_buffered(bad)
    assert (bad.raw_content, bad.headers["content-encoding"]) == (b"not gzip", "gzip")


def test_stages_run_in_their_declared_order_whoever_adds_them_first() -> None:
    seen: list[str] = []

    def stage(name: str) -> Callable[[bytes], bytes]:
        def run(data: bytes) -> bytes:
            seen.append(f"{name}:{data.decode()}")
            return data.upper() if name == "mask" else data

        return run

    pipe = Pipe(None, lambda: None)
    for name in ("count", "mask", "meter"):  # relay.py's call order is not the bytes' order
        pipe.add(name, stage(name))
    assert pipe(b"ab") == [b"AB"]
    assert seen == ["meter:ab", "mask:ab", "count:AB"]
    seen.clear()
    assert pipe(b"") == []  # the end: each stage flushes once, and no empty chunk goes out
    assert seen == ["meter:", "mask:", "count:"]
    with pytest.raises(ValueError, match="each once"):
        pipe.add("mask", stage("mask"))
