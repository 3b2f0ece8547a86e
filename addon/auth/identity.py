"""The authenticated caller, as later stages (limits, logs, metrics, per-tenant keys) read it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from addon import client_address


@dataclass(frozen=True, slots=True)
class Identity:
    """`kind` is how it was established: jwt, token, forward, or ip (anonymous)."""

    kind: str
    name: str
    # A JWT's verified claims; held in memory only (a tenant key may be chosen by one of them).
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@functools.lru_cache(maxsize=4096)  # every request of an unauthenticated caller asks
def anonymous(client_ip: str) -> Identity:
    """The client's address (`ip:2001:db8:1:2::/64` for IPv6): see addon/client_address.py."""
    return Identity("ip", client_address.group(client_ip))
