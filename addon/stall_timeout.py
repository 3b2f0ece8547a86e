"""A timeout that does not blame others for keyrelay's own stalls.

A wall-clock timeout on an event loop counts the time the loop spent elsewhere. When a burst
holds the loop for longer than the timeout, a Redis reply that arrived in time sits unread in
the socket, and `asyncio.timeout` fires in the same turn that would have read it: a healthy
Redis looked "slow", and each such request got 503. Here a deadline the loop reached late
(by more than a tenth of the timeout) is moved on by that tenth rather than fired, so what
arrived during the stall is read first. A server that really is silent still times out,
within `seconds` plus a tenth once the loop is keeping time again, and never later than `limit`.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

LATE = 0.1  # of the timeout: a deadline reached later than this was held up by the loop


class StallTolerantTimeout:
    """`async with StallTolerantTimeout(seconds, limit):` raises TimeoutError like
    `asyncio.timeout(seconds)`, except while the loop itself is running late (see above)."""

    def __init__(self, seconds: float, limit: float) -> None:
        self.seconds, self.limit = seconds, limit
        self.expired = False
        self._grace = seconds * LATE

    async def __aenter__(self) -> Self:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("StallTolerantTimeout needs a task")
        self._cancelling = self._task.cancelling()
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._end = now + self.limit
        self._arm(now + self.seconds)
        return self

    def _arm(self, when: float) -> None:
        self._when = when
        self._handle = self._loop.call_at(when, self._reached)

    def _reached(self) -> None:
        now = self._loop.time()
        if now - self._when > self._grace and now < self._end:
            self._arm(min(now + self._grace, self._end))  # read what waited, then decide
            return
        self.expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        assert self._task is not None
        # As asyncio.timeout does: only our own cancellation becomes a TimeoutError (uncancel()
        # first, whatever ended the body); one from outside still propagates.
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and kind is not None
            and issubclass(kind, asyncio.CancelledError)
        ):
            raise TimeoutError from error
