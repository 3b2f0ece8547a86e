"""Offline replay: `keyrelay_replay=true` with mitmproxy's `server_replay=FILE`.

Every request still takes keyrelay's whole path (routing, validation, auth, CORS); the response
comes from the recording instead of the network. So that a provider routes without its key,
replay mode gives every provider a placeholder key, and never reads the real ones. Nothing
may reach the network: an upstream connection is refused with a problem the client can read.
"""

from __future__ import annotations

import dataclasses

from addon import errorpage
from addon.credentials import Credential, EnvSource
from addon.rules import Rules

NOT_RECORDED = errorpage.message(
    502, "not-recorded", "replay mode: no recorded response matches this request"
)


def offline(rules: Rules) -> Rules:
    """The rules with every credential replaced by one placeholder key per provider.

    Files, commands, pools and tenant tables are dropped too: replay never reads a real key."""
    env = dict(rules.env)
    providers = []
    for provider in rules.providers:
        name = f"KEYRELAY_REPLAY_{provider.name.upper().replace('-', '_')}"
        env[name] = f"replay-placeholder-{provider.name}"
        credential = Credential(
            provider.credential.header, provider.credential.format, (EnvSource((name,)),)
        )
        providers.append(dataclasses.replace(provider, credential=credential))
    return dataclasses.replace(rules, providers=tuple(providers), env=env)
