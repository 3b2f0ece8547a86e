"""The `ownership:` section (under `defaults:` or a provider): jobs belong to whoever started them.

    ownership: {ttl: 86400}      # seconds an owner is remembered (default one day)
    ownership: false             # off for this provider
    ownership: {enabled: true}   # on even with `auth: none` (the owner is then a client address)

Which requests start and name jobs is known from the target host (addon/jobs/kinds.py: fal's
queue, inference.sh's tasks), so it applies to any provider that reaches those hosts. By default
it is on whenever the provider authenticates its clients: without auth the identity is only an
address, shared by everyone behind one NAT.
"""

from __future__ import annotations

from typing import Any

from addon.config.model import Flag, Positive, over, section

DEFAULT_TTL = 86400


@section
class OwnershipSpec:
    enabled: Flag | None = None  # None: on whenever auth.mode is not "none"
    ttl: Positive = DEFAULT_TTL

    def active(self, auth_mode: str) -> bool:
        return self.enabled if self.enabled is not None else auth_mode != "none"


Ownership = Flag | OwnershipSpec  # as rules.yaml writes it: `false`, or the mapping


def layer_ownership(raw: Any, base: OwnershipSpec, file: str, path: str) -> OwnershipSpec:
    """An `ownership:` value (true, false or a mapping); what it leaves out comes from `base`."""
    if raw is None:
        return base
    return over(base, {"enabled": raw} if isinstance(raw, bool) else raw, file, path)
