"""Opt-in `Server-Timing: keyrelay;dur=<ms>` on every answer: the time spent in keyrelay,
the upstream's excluded (`keyrelay_server_timing`, off by default).

A call's time from its head's arrival until its answer's head goes out, less what was not
keyrelay's: the client still sending a body keyrelay waited for, and the upstream, from the
request handed to it (connecting included) to its answer's head (a streamed answer) or its
last byte (a buffered one, which keyrelay reads whole before sending). An answer keyrelay gave
itself (a refusal, an admin endpoint) has no upstream part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http

from addon.flowlocal import FlowLocal

HEADER = "server-timing"


@dataclass(slots=True)
class _Marks:
    decided: float  # time.time() requestheaders was done
    streamed: bool  # the body went upstream as it came (so the upload is the upstream's part)
    sent: float | None = None  # when the request was handed upstream


def keyrelay_ms(
    start: float,
    decided: float | None,
    body_in: float | None,
    sent: float | None,
    upstream_end: float | None,
    now: float,
    *,
    streamed: bool = False,
) -> float:
    """Milliseconds in keyrelay, from the times of one exchange (time.time(), seconds)."""
    total = now - start
    waited = 0.0
    if decided is not None and body_in is not None and not streamed:
        waited += max(0.0, body_in - decided)  # the client's body arriving
    if sent is not None and upstream_end is not None:
        waited += max(0.0, upstream_end - sent)  # the upstream's part
    return max(0.0, total - waited) * 1000


class ServerTiming:
    def __init__(self) -> None:
        self.on = False
        self._marks: FlowLocal[_Marks] = FlowLocal("timing.marks")

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_server_timing",
            bool,
            False,
            "Add `Server-Timing: keyrelay;dur=<ms>` to every answer: the time spent in "
            "keyrelay, the upstream's excluded.",
        )

    def configure(self, updated: set[str]) -> None:
        if "keyrelay_server_timing" in updated:
            self.on = ctx.options.keyrelay_server_timing

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Last of requestheaders: decided. A body streamed upstream goes from now."""
        if self.on:
            streamed = bool(flow.request.stream) and flow.response is None
            now = time.time()
            self._marks.set(flow, _Marks(now, streamed, now if streamed else None))

    def request(self, flow: http.HTTPFlow) -> None:
        """Last of request: a whole body is handed upstream now."""
        marks = self._marks.get(flow) if self.on else None
        if marks is not None and not marks.streamed and flow.response is None:
            marks.sent = time.time()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """A streamed answer's head goes out after this hook: stamped now."""
        response = flow.response
        if self.on and response is not None and response.stream:
            self._stamp(flow, response, response.timestamp_start)

    def response(self, flow: http.HTTPFlow) -> None:
        """A buffered answer (or keyrelay's own) goes out after this hook."""
        response = flow.response
        marks = self._marks.get(flow)
        if marks is not None and response is not None and not response.stream:
            self._stamp(flow, response, response.timestamp_end)
        self._marks.pop(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._marks.pop(flow)

    def _stamp(
        self, flow: http.HTTPFlow, response: http.Response, upstream_end: float | None
    ) -> None:
        marks = self._marks.get(flow)
        if marks is None:
            return
        request = flow.request
        ms = keyrelay_ms(
            request.timestamp_start,
            marks.decided,
            request.timestamp_end,
            marks.sent,
            upstream_end,
            time.time(),
            streamed=marks.streamed,
        )
        response.headers[HEADER] = f"keyrelay;dur={ms:.1f}"
