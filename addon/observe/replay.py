"""Offline replay: `keyrelay_replay=true` with mitmproxy's `server_replay=FILE`.

Every request still takes keyrelay's whole path (routing, validation, auth, CORS); the response
comes from the recording instead of the network. So that a provider routes without its key,
replay mode gives every provider a placeholder key, and never reads the real ones. Nothing
may reach the network: an upstream connection is refused with a problem the client can read.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from mitmproxy import ctx, exceptions, http, io
from mitmproxy.proxy import server_hooks

from addon import errorpage, flowstate
from addon.config.credential import Credential, EnvSource
from addon.config.rules import Rules

logger = logging.getLogger(__name__)

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


class Replay:
    """The option, the recording handed to mitmproxy's server replay, and no network."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_replay",
            bool,
            False,
            "Replay mode (with server_replay=FILE): placeholder keys, never the network.",
        )

    @property
    def on(self) -> bool:
        return bool(ctx.options.keyrelay_replay)

    def keyed_rules(self, rules: Rules) -> Rules:
        """The rules whose keys the KeyStore should load: placeholders in replay mode."""
        return offline(rules) if self.on else rules

    def running(self) -> None:
        if self.on:
            self._load_recording()

    def _load_recording(self) -> None:
        """Give server_replay only the responses keyrelay forwarded. A recorded refusal or
        health answer must not stand in for what keyrelay decides now: mitmproxy's replay
        replaces any response an addon set, and matching ignores headers (so credentials)."""
        try:
            flows = io.read_flows_from_paths(ctx.options.server_replay)
        except exceptions.FlowReadException as e:
            raise exceptions.OptionsError(f"server_replay: {e}") from e
        forwarded = [
            f
            for f in flows
            if isinstance(f, http.HTTPFlow)
            and f.response is not None
            and flowstate.of(f).get("decision") == "forwarded"
        ]
        ctx.master.commands.call("replay.server", forwarded)
        logger.info(
            "keyrelay: replaying %d recorded responses (%d flows skipped: not forwarded)",
            len(forwarded),
            len(flows) - len(forwarded),
        )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Replay mode never reaches the network: a request with no recording is refused."""
        if self.on:
            data.server.error = NOT_RECORDED
