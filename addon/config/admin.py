"""The top-level `admin:` section: who may read keyrelay's own endpoints (/_keyrelay/...).

    admin:
      loopback: true                          # clients on 127.0.0.1 / ::1 need no token
      token: {env: KEYRELAY_ADMIN_TOKEN}       # anyone sending `Authorization: Bearer TOKEN`
      probes: [10.0.0.0/8]                    # may read /_keyrelay/live and /ready, nothing else

Without the section only loopback clients may read them.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from addon.config.key_sources import EnvSource
from addon.config.model import Flag, Networks, section


@section
class Admin:
    loopback: Flag = True
    token: EnvSource | None = None
    # Networks whose probes may read /_keyrelay/live and /ready (a kubelet's), nothing else.
    probes: Networks = ()

    def token_value(self, env: Mapping[str, str]) -> str | None:
        return self.token.read(dict(env)) if self.token else None


def bearer_is(token: str | None, authorization: str | None) -> bool:
    """`Authorization: Bearer <token>` names the admin token (compared in constant time)."""
    if not (token and authorization):
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)
