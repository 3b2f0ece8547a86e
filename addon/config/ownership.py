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

from dataclasses import dataclass

from addon.config.node import Node

DEFAULT_TTL = 86400


@dataclass(frozen=True, slots=True)
class OwnershipSpec:
    enabled: bool | None = None  # None: on whenever auth.mode is not "none"
    ttl: int = DEFAULT_TTL

    def active(self, auth_mode: str) -> bool:
        return self.enabled if self.enabled is not None else auth_mode != "none"


def parse_ownership(parent: Node, name: str, base: OwnershipSpec) -> OwnershipSpec:
    """`parent.<name>`: true, false or a mapping; what it leaves out comes from `base`."""
    raw = parent.raw(name, None)
    if raw is None:
        return base
    if isinstance(raw, bool):
        return OwnershipSpec(raw, base.ttl)
    node = parent.child(name)
    spec = OwnershipSpec(
        enabled=node.flag("enabled", base.enabled),
        ttl=node.integer("ttl", base.ttl, minimum=1),
    )
    node.finish()
    return spec
