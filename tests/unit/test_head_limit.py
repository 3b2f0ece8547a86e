"""The request-head cap: what is too large (on the wire: tests/e2e/test_hostile_heads.py)."""

from __future__ import annotations

import pytest

from addon.transport.head_limit import oversized

LINE = b"x-a: " + b"a" * 95 + b"\r\n"  # 102 bytes


@pytest.mark.parametrize(
    ("buffered", "problem"),
    [
        (b"GET / HTTP/1.1\r\n" + LINE * 5 + b"\r\n", None),
        (b"GET / HTTP/1.1\r\n" + LINE * 5, None),  # incomplete, still small
        (b"GET / HTTP/1.1\r\n" + LINE * 20, "larger than 1024"),  # incomplete, too large
        (b"GET / HTTP/1.1\r\n" + LINE * 20 + b"\r\n", "larger than 1024"),
        (b"GET / HTTP/1.1\r\n" + b"x-b: " + b"b" * 300, "longer than 256"),  # a partial line
        (b"GET / HTTP/1.1\r\n" + LINE + b"\r\n" + b"body" * 1000, None),  # the body is not head
        (b"GET / HTTP/1.1\n" + LINE + b"\n" + b"b" * 5000, None),  # bare LF ends a head too
    ],
)
def test_oversized(buffered: bytes, problem: str | None) -> None:
    found = oversized(buffered, head=1024, line=256)
    assert (found is None) if problem is None else (found is not None and problem in found)
