"""The one way live resources survive a rules reload.

A resource is anything a rules load builds that runs or holds a connection: a key file
watcher, a key command, a tenant table, a JWKS refresher, a forward-auth cache, a Redis link,
a rate-limit store. Each is asked for by an identity made of what it was built from (its spec).
A reload that asks for the same identity gets the same object, so a reload neither re-runs key
commands nor refetches key sets nor forgets which keys are resting; one that no longer asks for
it stops it. A load that fails changes nothing: what it built is stopped, the old set stays.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar, cast

from addon import tasks

# A resource may have `start()` (begin background work; called with the event loop running,
# perhaps more than once), and `stop()` or an async `close()` (end it).
Resource = object
R = TypeVar("R")


class Resources:
    """The live resources of the current rules."""

    def __init__(self) -> None:
        self._held: dict[Hashable, Resource] = {}
        self._running = False

    @contextlib.contextmanager
    def reload(self) -> Iterator[Generation]:
        """Build the next rules' resources; they replace the current ones when the block
        ends without an exception."""
        generation = Generation(self._held)
        try:
            yield generation
        except BaseException:
            for ident, resource in generation.made.items():
                if self._held.get(ident) is not resource:
                    _stop(resource)
            raise
        for ident, resource in self._held.items():
            if generation.taken.get(ident) is not resource:
                _stop(resource)
        self._held = generation.taken
        if self._running:
            self.start()

    def start(self) -> None:
        """The event loop is running: start everything (again: starting twice is harmless)."""
        self._running = True
        for resource in self._held.values():
            if start := getattr(resource, "start", None):
                start()

    def stop(self) -> None:
        self._running = False
        for resource in self._held.values():
            _stop(resource)


class Generation:
    """What one rules load asks for."""

    def __init__(self, held: dict[Hashable, Resource]) -> None:
        self._held = held
        self.taken: dict[Hashable, Resource] = {}
        self.made: dict[Hashable, Resource] = {}

    def get(self, ident: Hashable, make: Callable[[], R]) -> R:
        """The resource known by `ident`: the one already running, or a new one."""
        if ident in self.taken:
            return cast(R, self.taken[ident])
        resource = self._held.get(ident)
        if resource is None:
            resource = self.made[ident] = make()
        self.taken[ident] = resource
        return cast(R, resource)


def _stop(resource: Resource) -> None:
    end = getattr(resource, "stop", None) or getattr(resource, "close", None)
    result = end() if end else None
    if inspect.iscoroutine(result):  # closing a connection: in the background
        tasks.spawn(result)
