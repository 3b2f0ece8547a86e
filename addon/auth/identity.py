"""The authenticated caller, as later stages (limits, logs, metrics, per-tenant keys) read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATE = "keyrelay"  # the flow.metadata key relay.py uses (relay.STATE); a test keeps them equal


@dataclass(frozen=True, slots=True)
class Identity:
    """`kind` is how it was established: jwt, token, forward, or ip (anonymous)."""

    kind: str
    name: str
    # A JWT's verified claims; held in memory only (a tenant key may be chosen by one of them).
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def anonymous(client_ip: str) -> Identity:
    return Identity("ip", client_ip)


def identity_of(flow: Any) -> str | None:
    """The caller of a flow as 'kind:name' (e.g. 'jwt:alice', 'ip:203.0.113.7'), once decided."""
    state = flow.metadata.get(STATE)
    return state.get("identity") if isinstance(state, dict) else None
