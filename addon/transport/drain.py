"""Deploys that drain: SIGTERM (or SIGINT) stops listening, answers new requests on open
connections 503 `draining` (with `Retry-After` and `Connection: close`), lets what is in flight
finish within `keyrelay_drain_timeout`, then shuts down; a second signal shuts down at once.
SIGHUP reloads the rules.

mitmdump's own handlers end the process at once (a stream in flight loses its last chunk, its
reservation its settlement): keyrelay replaces them with these when it starts running, through
asyncio's `add_signal_handler`, which keeps one handler per signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx

from addon import tasks
from addon.problems import Refusal

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30  # seconds (mitmproxy options take no floats)
POLL = 0.1  # seconds between two looks at what is still in flight

REFUSAL = Refusal(
    503,
    "draining",
    "this keyrelay instance is shutting down: send the request again",
    headers=(("retry-after", "1"), ("connection", "close")),
)


class Drain:
    def __init__(self, in_flight: Callable[[], int], reload: Callable[[], None]) -> None:
        self._in_flight = in_flight  # requests and streams not yet answered in full
        self._reload = reload
        self.draining = False

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_drain_timeout",
            int,
            DRAIN_TIMEOUT,
            "Seconds a SIGTERM leaves requests and streams in flight to finish (0: none).",
        )

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for stop in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(stop, self.begin)
            loop.add_signal_handler(signal.SIGHUP, self._reload)
        except (NotImplementedError, RuntimeError):  # no signals here (a thread, Windows)
            logger.info("keyrelay: signals are mitmproxy's: no drain on SIGTERM")

    def refusal(self) -> Refusal | None:
        """requestheaders: a new request while draining."""
        return REFUSAL if self.draining else None

    def begin(self) -> None:
        if self.draining:  # asked twice: at once
            ctx.master.shutdown()
            return
        self.draining = True
        ctx.options.update(server=False)  # no new connections; those open stay
        logger.info("keyrelay: draining: %d in flight", self._in_flight())
        tasks.spawn(self._finish(ctx.options.keyrelay_drain_timeout))

    async def _finish(self, timeout: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := self._in_flight()) and loop.time() < deadline:
            await asyncio.sleep(POLL)
        if left:
            logger.warning("keyrelay: drained for %ds: %d still in flight, ended", timeout, left)
        ctx.master.shutdown()
