"""The header index answers as `Headers.get` does, and never from a stale set of fields."""

from __future__ import annotations

import gzip

import pytest
from mitmproxy import http

from addon import header_index


def test_it_answers_as_mitmproxy_does() -> None:
    headers = http.Headers(
        [
            (b"Content-Type", b"application/json"),
            (b"X-Fal-Target-Url", b"https://fal.run/x"),
            (b"accept", b"text/event-stream"),
            (b"Accept", b"application/json"),
            (b"x-odd", b"caf\xc3\xa9 \xff"),
        ]
    )
    get = header_index.lookup(headers)
    for name in ("content-type", "x-fal-target-url", "accept", "x-odd", "absent"):
        assert get(name) == headers.get(name), name
    assert get("accept") == "text/event-stream, application/json"


def test_a_rewrite_of_the_fields_is_seen_at_once() -> None:
    headers = http.Headers([(b"upgrade", b"websocket")])
    assert header_index.lookup(headers)("upgrade") == "websocket"
    headers.fields = ((b"host", b"api.openai.com"),)
    assert header_index.lookup(headers)("upgrade") is None
    headers["x-new"] = "1"  # mitmproxy replaces the tuple on every change
    assert header_index.lookup(headers)("x-new") == "1"


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        (None, b'{"a":1}'),
        ("gzip", gzip.compress(b'{"a":1}', mtime=0)),
        ("gzip", b"not gzip"),
        ("", b"x"),
    ],
)
def test_content_is_get_content_without_strictness(encoding: str | None, raw: bytes) -> None:
    response = http.Response.make(
        200, b"", {} if encoding is None else {"content-encoding": encoding}
    )
    response.raw_content = raw
    assert header_index.content(response) == response.get_content(strict=False)
