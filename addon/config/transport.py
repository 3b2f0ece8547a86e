"""The `transport:` section of a provider (or of `defaults:`):

transport:
  timeouts: {connect: 10, first_byte: 600, idle: 300}   # seconds, 0 = none
  max_request_bytes: 100 MiB     # larger requests get a 413 problem
  stream_requests_above: 1 MiB   # larger request bodies go upstream as they arrive
  buffer_responses_up_to: 1 MiB  # larger responses are streamed (streams always are)
  upstream_http2: true           # offer HTTP/2 upstream even to HTTP/1 clients
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from addon.config.node import Node

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; 0 disables that limit."""

    connect: float = 10.0
    first_byte: float = 600.0  # non-streamed generations (images, long answers) take minutes
    idle: float = 300.0


def parse_timeouts(node: Node | None) -> Timeouts:
    if node is None:
        return Timeouts()
    d = Timeouts()
    timeouts = Timeouts(
        connect=node.number("connect", d.connect),
        first_byte=node.number("first_byte", d.first_byte),
        idle=node.number("idle", d.idle),
    )
    node.finish()
    return timeouts


@dataclass(frozen=True, slots=True)
class TransportSpec:
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_request_bytes: int = 100 * MiB
    stream_requests_above: int = 1 * MiB
    buffer_responses_up_to: int = 1 * MiB
    upstream_http2: bool = True


_SIZE = re.compile(r"\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": MiB, "gb": 1000**3}
_UNITS["gib"] = 1024 * MiB


def parse_transport(node: Node | None) -> TransportSpec:
    if node is None:
        return TransportSpec()
    d = TransportSpec()
    transport = TransportSpec(
        timeouts=parse_timeouts(node.child("timeouts", None)),
        max_request_bytes=_size(node, "max_request_bytes", d.max_request_bytes),
        stream_requests_above=_size(node, "stream_requests_above", d.stream_requests_above),
        buffer_responses_up_to=_size(node, "buffer_responses_up_to", d.buffer_responses_up_to),
        upstream_http2=node.flag("upstream_http2", d.upstream_http2),
    )
    node.finish()
    return transport


def _size(node: Node, name: str, default: int) -> int:
    value = node.raw(name, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        node.fail("must be a byte count like 1048576 or '100 MiB'", name)
    return int(match[1]) * _UNITS[match[2].lower()]
