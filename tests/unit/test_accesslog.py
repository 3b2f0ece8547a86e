"""The access log line: every field, no query values."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from addon.observe import accesslog
from addon.observe.accesslog import Entry

ENTRY = Entry(
    time=1_700_000_000.25,
    identity="client:alice",
    provider="fal",
    method="POST",
    host="queue.fal.run",
    path="/fal-ai/flux/dev",
    status=200,
    bytes_in=34,
    bytes_out=173,
    duration_ms=12.5,
    ttfb_ms=10.0,
    decision="forwarded",
)


def test_json_line_has_every_field() -> None:
    data = json.loads(accesslog.as_json(ENTRY))
    assert data == {
        "time": "2023-11-14T22:13:20.250Z",
        "identity": "client:alice",
        "provider": "fal",
        "method": "POST",
        "host": "queue.fal.run",
        "path": "/fal-ai/flux/dev",
        "status": 200,
        "bytes_in": 34,
        "bytes_out": 173,
        "duration_ms": 12.5,
        "ttfb_ms": 10.0,
        "decision": "forwarded",
    }


def test_text_line_and_refusal() -> None:
    refused = replace(
        ENTRY,
        host=None,
        status=412,
        decision="refused",
        refusal="target-not-allowed",
        path="/api/fal/proxy",
        ttfb_ms=None,
    )
    line = accesslog.as_text(refused)
    assert line == (
        "2023-11-14T22:13:20.250Z client:alice fal POST /api/fal/proxy 412 in=34 out=173 "
        "dur=12.5ms ttfb=- refused reason=target-not-allowed"
    )
    assert accesslog.render(refused, "off") is None
    assert json.loads(accesslog.render(refused, "json") or "")["refusal"] == "target-not-allowed"


def test_fields_a_client_chose_are_escaped_in_the_text_line() -> None:
    hostile = replace(
        ENTRY,
        identity="forward:eve 200 admin",  # a forward-auth identity header, as sent
        method="GET\x1b[2J",
        host=None,
        path="/api/x\x0b\x0c\r\n2023-11-14T22:13:20.250Z alice - POST /forged\u2028\x85\x7f",
    )
    line = accesslog.as_text(hostile)
    assert line.splitlines() == [line]
    assert line.split(" ")[1:5] == [
        "forward:eve%20200%20admin",
        "fal",
        "GET%1B[2J",
        "/api/x%0B%0C%0D%0A2023-11-14T22:13:20.250Z%20alice%20-%20POST%20/forged%E2%80%A8%C2%85%7F",
    ]
    assert accesslog.escape("/fal-ai/flux/dev") == "/fal-ai/flux/dev"
    assert accesslog.escape("/héllo") == "/héllo"  # printable text stays readable


def test_text_line_carries_usage_and_cost() -> None:
    entry = replace(ENTRY, usage={"input_tokens": 12, "units": 1.5}, cost=0.0375)
    line = accesslog.as_text(entry)
    assert line.endswith("forwarded usage=input_tokens:12,units:1.5 cost=0.0375")
    assert json.loads(accesslog.as_json(entry))["usage"] == {"input_tokens": 12, "units": 1.5}


@pytest.mark.parametrize(
    "ts",
    [0.0, 1.9999996, 1764000000.0004999, 1764000000.9995, 1764000000.9999995, 1764003599.5]
    + [random.Random(7).uniform(0, 4e9) for _ in range(200)],
)
def test_the_time_is_spelt_as_isoformat_spells_it(ts: float) -> None:
    # The seconds part is reused within a second; the rounding at its edges must not differ.
    accesslog.iso_time(ts + 1)  # another second cached first
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert accesslog.iso_time(ts) == expected.replace("+00:00", "Z")
