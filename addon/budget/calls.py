"""One call's metering while it runs, kept by the budget between its hooks (budget/component.py
and, for arrays of tasks, budget/task_arrays.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from addon.budget.books import Account
from addon.config.operations import ObjectSpec, Operation
from addon.config.provider import Provider
from addon.metering.stream import StreamMeter
from addon.metering.usage import Usage
from addon.ratelimit.backend import StoreError
from addon.ratelimit.limiter import RELEASE_RETRIES

logger = logging.getLogger(__name__)


@dataclass
class Tasks:
    """A call whose body is an array of tasks (Runware): each task is billed on its own."""

    spec: ObjectSpec  # what a task is (its lease: `job:<its key>`)
    reserved: dict[str, int]  # nano-dollars per submitted task's UUID (0 without a budget)
    shown: frozenset[str]  # UUIDs whose cost the client asked to see
    asked: frozenset[str]  # submitted UUIDs whose client asked for the cost itself
    model: str | None = None

    def lease(self, uuid: str) -> str:
        return f"job:{self.spec.key(uuid)}"


@dataclass
class Call:
    """One forwarded request's metering, in memory until it settles."""

    provider: Provider
    identity: str
    endpoint: str  # upstream path without the leading "/" (fal prices match it)
    host: str  # upstream host
    operation: Operation | None = None  # what the profile knows the call as (its meter)
    model: str | None = None  # from the request body; the answer's own wins
    strip: bool = False  # keyrelay asked for a chat stream's usage: take it out again
    client_body: bytes | None = None  # the body as the client sent it, when keyrelay rewrote it
    usage: Usage = field(default_factory=dict)
    stream: StreamMeter | None = None
    accounts: tuple[Account, ...] = ()
    reserved: int = 0  # nano-dollars
    hidden: int = 0  # output tokens it may be billed that its stream does not show
    lease: str | None = None  # what it reserved under: its own lease, or its job's (a result)
    tasks: Tasks | None = None  # an array of tasks (Runware)


def asked_key(spec: ObjectSpec, uuid: str) -> str:
    """Where the jobs' store notes that a task's client asked for its cost."""
    return f"{spec.key(uuid)}#cost"


async def retrying(write: Callable[[], Awaitable[object]]) -> None:
    """A settlement retried a few times: lost, its lease still ends (a flow's is released,
    a job's charged)."""
    for pause in (*RELEASE_RETRIES, None):
        try:
            await write()
            return
        except StoreError as e:
            if pause is None:
                logger.error("keyrelay: budget: a settlement was lost (%s)", e)
                return
        await asyncio.sleep(pause)
