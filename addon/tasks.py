"""Background work that nobody awaits, kept referenced until it is done.

The event loop holds only a weak reference to a task: one that nothing else refers to may be
collected mid-way. Every fire-and-forget coroutine in keyrelay goes through `spawn`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

_running: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
    """Run `coroutine` on the running loop. Without one (at import, in a unit test) it is
    closed unrun: there is then nothing for it to clean up."""
    try:
        task = asyncio.get_running_loop().create_task(coroutine)
    except RuntimeError:
        coroutine.close()
        return None
    _running.add(task)
    task.add_done_callback(_finished)
    return task


async def settled(timeout: float) -> None:
    """Wait, at most `timeout` seconds, for the background work still running (at shutdown:
    settlements, releases)."""
    if pending := [t for t in _running if t is not asyncio.current_task()]:
        await asyncio.wait(pending, timeout=timeout)


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        # The type only: an exception's text may quote an address or a value.
        logger.warning("keyrelay: a background task failed: %s", type(error).__name__)
