"""State one component keeps for a flow while it is live, that dies with the flow.

A dict keyed by `flow.id` lives until some hook pops it, and which hooks run for a flow
(`response`, `error`, `websocket_end`, none at all for one mitmproxy drops) differs from flow
to flow: every such table had its own subset of hooks to clean it, and nothing checked that they
drained. A FlowLocal is keyed by the flow object itself, weakly: hooks still take their entry
when they are done with it (a slot, a reservation), but an entry that no hook took goes when
mitmproxy lets go of the flow. A value must not refer to its flow (it would keep it alive):
`leftovers()` finds any that outlived theirs (the drain test).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from mitmproxy import flow as mitmflow

_ALL: weakref.WeakSet[FlowLocal[object]] = weakref.WeakSet()


class FlowLocal[T]:
    def __init__(self, name: str) -> None:
        self.name = name  # what the drain test reports
        self._table: weakref.WeakKeyDictionary[mitmflow.Flow, T] = weakref.WeakKeyDictionary()
        _ALL.add(self)  # type: ignore[arg-type]

    def get(self, flow: mitmflow.Flow) -> T | None:
        return self._table.get(flow)

    def set(self, flow: mitmflow.Flow, value: T) -> None:
        self._table[flow] = value

    def pop(self, flow: mitmflow.Flow) -> T | None:
        return self._table.pop(flow, None)

    def __contains__(self, flow: mitmflow.Flow) -> bool:
        return flow in self._table

    def __len__(self) -> int:
        return len(self._table)

    def items(self) -> Iterator[tuple[mitmflow.Flow, T]]:
        """A snapshot: hooks may run (and pop) while the caller walks it."""
        return iter(list(self._table.items()))

    def clear(self) -> None:
        self._table.clear()


def leftovers() -> dict[str, int]:
    """Every table's entries still held, by table name (after the flows are gone: none)."""
    held: dict[str, int] = {}
    for table in list(_ALL):
        if len(table):
            held[table.name] = held.get(table.name, 0) + len(table)
    return held
