"""The top-level `admin:` section: who may read keyrelay's own endpoints (/_keyrelay/...).

    admin:
      loopback: true                          # clients on 127.0.0.1 / ::1 need no token
      token: {env: KEYRELAY_ADMIN_TOKEN}       # anyone sending `Authorization: Bearer TOKEN`

Without the section only loopback clients may read them.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from addon.config.credential import EnvSource
from addon.config.node import Node


@dataclass(frozen=True, slots=True)
class Admin:
    loopback: bool = True
    token: EnvSource | None = None
    # Networks whose probes may read /_keyrelay/live and /ready (a kubelet's), nothing else.
    probes: tuple[IPv4Network | IPv6Network, ...] = ()

    def token_value(self, env: Mapping[str, str]) -> str | None:
        return self.token.read(dict(env)) if self.token else None


def bearer_is(token: str | None, authorization: str | None) -> bool:
    """`Authorization: Bearer <token>` names the admin token (compared in constant time)."""
    if not (token and authorization):
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def parse_admin(node: Node | None) -> Admin:
    if node is None:
        return Admin()
    loopback = node.flag("loopback", True)
    token = None
    if "token" in node:
        source = node.child("token")
        name = source.text("env")
        if not name.isidentifier():
            source.fail("must name an environment variable", "env")
        source.finish()
        token = EnvSource((name,))
    probes = node.networks("probes")
    node.finish()
    return Admin(loopback, token, probes)
