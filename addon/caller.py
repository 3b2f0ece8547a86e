"""Who is calling: what the guard established, handed to each later step as a value.

The guard makes it once it has authenticated a request; jobs, the budget and the key choice
take it as an argument (relay.py hands it on), so none of them can run before the guard has
decided, nor read a default from the flow's state when it has not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str  # "token:alice", "jwt:bob", "ip:203.0.113.7" (anonymous)
    # Only the claim that picks a tenant's key, if any (the rest are not kept: the flow's
    # metadata, where the access log reads them, is saved with flows).
    claims: Mapping[str, str] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.identity.startswith("ip:")
