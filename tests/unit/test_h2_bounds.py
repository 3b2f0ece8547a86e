"""The HTTP/2 stream filter (on the wire: tests/e2e/test_hostile_heads.py)."""

from __future__ import annotations

from typing import Any

import h2.events

from addon.transport.h2_bounds import MAX_RESETS_PER_SECOND, StreamRate


def opened(stream: int) -> h2.events.RequestReceived:
    return h2.events.RequestReceived(stream_id=stream)


def reset(stream: int) -> h2.events.StreamReset:
    return h2.events.StreamReset(stream_id=stream)


def data(stream: int) -> h2.events.DataReceived:
    return h2.events.DataReceived(stream_id=stream, data=b"x", flow_controlled_length=10)


def rate_over(batches: list[list[Any]]) -> tuple[StreamRate, list[tuple[int, int]]]:
    acknowledged: list[tuple[int, int]] = []
    feed = iter(batches)
    rate = StreamRate(lambda _data: next(feed), lambda size, s: acknowledged.append((s, size)))
    return rate, acknowledged


def test_a_stream_reset_in_the_same_read_never_becomes_a_request() -> None:
    rate, acknowledged = rate_over([[opened(1), data(1), reset(1), opened(3), data(3)]])
    kept = rate(b"")
    assert [(type(e).__name__, e.stream_id) for e in kept] == [
        ("RequestReceived", 3),
        ("DataReceived", 3),
    ]
    assert acknowledged == [(1, 10)]  # the dropped data still opens the window again
    assert not rate.exceeded


def test_a_reset_in_a_later_read_is_left_to_mitmproxy() -> None:
    rate, _ = rate_over([[opened(1)], [reset(1)]])
    assert len(rate(b"")) == 1 and len(rate(b"")) == 1


def test_too_many_resets_in_a_second_mark_the_connection() -> None:
    batches = [[opened(2 * i + 1), reset(2 * i + 1)] for i in range(MAX_RESETS_PER_SECOND + 1)]
    rate, _ = rate_over(batches)
    for _ in batches:
        assert rate(b"") == []
    assert rate.exceeded
