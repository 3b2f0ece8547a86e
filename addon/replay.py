"""Offline replay: `keyrelay_replay=true` with mitmproxy's `server_replay=FILE`.

Every request still takes keyrelay's whole path (routing, validation, auth, CORS); the response
comes from the recording instead of the network. So that a provider routes without its key,
replay mode gives every provider a placeholder key, and never reads the real ones. Nothing
may reach the network: an upstream connection is refused with a problem the client can read.
"""

from __future__ import annotations

import dataclasses

from addon import errorpage
from addon.rules import Rules

NOT_RECORDED = errorpage.message(
    502, "not-recorded", "replay mode: no recorded response matches this request"
)


def offline(rules: Rules) -> Rules:
    """The rules with each credential variable set to a placeholder instead of the real key."""
    names = {
        name
        for provider in rules.providers
        for source in provider.credential.sources
        for name in source.names
    }
    env = {k: v for k, v in rules.env.items() if k not in names}
    env.update({name: f"replay-placeholder-{name.lower()}" for name in names})
    return dataclasses.replace(rules, env=env)
