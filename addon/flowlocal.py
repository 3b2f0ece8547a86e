"""State one component keeps for a flow while it is live, that dies with the flow.

A dict keyed by `flow.id` lives until some hook pops it, and which hooks run for a flow
(`response`, `error`, `websocket_end`, none at all for one mitmproxy drops) differs from flow
to flow: every such table had its own subset of hooks to clean it, and nothing checked that they
drained. A FlowLocal keeps its value on the flow object itself (an attribute mitmproxy never
saves or copies), so the value goes with the flow whatever hooks ran; hooks still take it when
they are done with it (a slot, a reservation). Each table counts what it holds, so the drain
test can find a hook that forgot to take its entry (`leftovers`). A table whose owner must walk
its flows (flows still open at shutdown) also keeps them in a weak set.

On the flow, not in a WeakKeyDictionary: a weak key costs a weak reference per lookup, and a
request looks into these tables some forty times (benchmarked: 20 us a request).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from mitmproxy import flow as mitmflow

_ALL: weakref.WeakSet[FlowLocal[Any]] = weakref.WeakSet()
_ABSENT = object()


class FlowLocal[T]:
    def __init__(self, name: str, *, walked: bool = False) -> None:
        self.name = name  # what the drain test reports
        self._slot = f"_keyrelay_{name}"
        self._held = 0
        self._flows: weakref.WeakSet[mitmflow.Flow] | None = weakref.WeakSet() if walked else None
        _ALL.add(self)

    def get(self, flow: mitmflow.Flow) -> T | None:
        value = flow.__dict__.get(self._slot, _ABSENT)
        return None if value is _ABSENT else value  # type: ignore[return-value]

    def set(self, flow: mitmflow.Flow, value: T) -> None:
        held = flow.__dict__
        if self._slot not in held:
            self._held += 1
            if self._flows is not None:
                self._flows.add(flow)
        held[self._slot] = value

    def pop(self, flow: mitmflow.Flow) -> T | None:
        value = flow.__dict__.pop(self._slot, _ABSENT)
        if value is _ABSENT:
            return None
        self._held -= 1
        if self._flows is not None:
            self._flows.discard(flow)
        return value  # type: ignore[return-value]

    def __contains__(self, flow: mitmflow.Flow) -> bool:
        return self._slot in flow.__dict__

    def __len__(self) -> int:
        return self._held

    def items(self) -> Iterator[tuple[mitmflow.Flow, T]]:
        """A snapshot of the flows that hold a value (a table made `walked=True`): hooks may run
        (and pop) while the caller walks it."""
        assert self._flows is not None, f"{self.name} is not walked"
        slot = self._slot
        return iter([(f, f.__dict__[slot]) for f in list(self._flows) if slot in f.__dict__])


def leftovers() -> dict[str, int]:
    """Every table's entries that no hook took, by table name (after the flows' hooks: none)."""
    held: dict[str, int] = {}
    for table in list(_ALL):
        if len(table):
            held[table.name] = held.get(table.name, 0) + len(table)
    return held
