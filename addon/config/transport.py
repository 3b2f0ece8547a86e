"""The `transport:` section of a provider (or of `defaults:`):

transport:
  timeouts: {connect: 10, first_byte: 600, idle: 300}   # seconds, 0 = none
  max_request_bytes: 100 MiB     # larger requests get a 413 problem
  stream_requests_above: 1 MiB   # larger request bodies go upstream as they arrive
  buffer_responses_up_to: 1 MiB  # larger responses are streamed (streams always are)
  upstream_http2: true           # offer HTTP/2 upstream even to HTTP/1 clients
"""

from __future__ import annotations

from dataclasses import field

from addon.config.model import Flag, Number, Size, section

MiB = 1024 * 1024


@section
class Timeouts:
    """Seconds; 0 disables that limit."""

    connect: Number = 10.0
    first_byte: Number = 600.0  # non-streamed generations (images, long answers) take minutes
    idle: Number = 300.0


@section
class TransportSpec:
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_request_bytes: Size = 100 * MiB
    stream_requests_above: Size = 1 * MiB
    buffer_responses_up_to: Size = 1 * MiB
    upstream_http2: Flag = True
