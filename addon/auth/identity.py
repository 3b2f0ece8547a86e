"""The authenticated caller, as later stages (limits, logs, metrics, per-tenant keys) read it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    """The client's address; an IPv6 one by its /64 (`ip:2001:db8:1:2::/64`): one subscriber
    usually holds a whole /64, so counting single addresses would let one client take 2^64
    rate-limit identities. An IPv4-mapped IPv6 address (a dual-stack listener) is its IPv4."""
    try:
        address = ipaddress.ip_address(client_ip.partition("%")[0])  # no zone index
    except ValueError:
        return Identity("ip", client_ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return Identity("ip", str(address.ipv4_mapped))
        if not address.is_loopback:
            return Identity("ip", str(ipaddress.IPv6Network((address, 64), strict=False)))
    return Identity("ip", str(address))
