"""Offline replay: `keyrelay_replay=true` with mitmproxy's `server_replay=FILE`.

Every request still takes keyrelay's whole path (routing, validation, auth, CORS); the response
comes from the recording instead of the network. So that a provider routes without its key,
replay mode gives every provider a placeholder key, and never reads the real ones. Nothing
may reach the network: an upstream connection is refused with a problem the client can read.

keyrelay matches requests itself (replay_match.py: a JSON body by value, and a refusal that
says what the nearest recorded request differs in), in its `request` hook, once the request is
routed and whole; mitmproxy's own server replay is emptied, and `keepserving` set: replay
serves until it is stopped, not until the recording is used up.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from mitmproxy import ctx, exceptions, http, io
from mitmproxy.proxy import server_hooks

from addon import flowstate
from addon.config.credential import Credential, EnvSource
from addon.config.rules import Rules
from addon.observe.replay_match import Recording, Shape
from addon.problems import Refusal

logger = logging.getLogger(__name__)

NOT_RECORDED = Refusal(
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


def shape(request: http.Request) -> Shape:
    return Shape.of(
        request.method, request.host, request.port, request.path, request.raw_content or b""
    )


class Replay:
    """The option, the recording, the matching, and no network."""

    def __init__(self) -> None:
        self.recording: Recording[http.Response] = Recording([])
        self.on = False  # replay mode (keyrelay_replay)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_replay",
            bool,
            False,
            "Replay mode (with server_replay=FILE): placeholder keys, never the network.",
        )

    def configure(self, updated: set[str]) -> None:
        if "keyrelay_replay" in updated:
            self.on = bool(ctx.options.keyrelay_replay)  # read per request: kept, not looked up
        if "keyrelay_replay" in updated and self.on and not ctx.options.keepserving:
            # mitmdump stops once server replay has nothing left: replay serves until stopped.
            ctx.options.update(keepserving=True)

    def keyed_rules(self, rules: Rules) -> Rules:
        """The rules whose keys the KeyStore should load: placeholders in replay mode."""
        return offline(rules) if self.on else rules

    def running(self) -> None:
        if self.on:
            self._load_recording()

    def _load_recording(self) -> None:
        """Replay only the responses keyrelay forwarded. A recorded refusal or health answer
        must not stand in for what keyrelay decides now."""
        try:
            flows = io.read_flows_from_paths(ctx.options.server_replay)
        except exceptions.FlowReadException as e:
            raise exceptions.OptionsError(f"server_replay: {e}") from e
        forwarded = [
            (shape(f.request), f.response)
            for f in flows
            if isinstance(f, http.HTTPFlow)
            and f.response is not None
            and flowstate.of(f).get("decision") == "forwarded"
        ]
        ctx.master.commands.call("replay.server.stop")  # keyrelay matches (replay_match.py)
        self.recording = Recording(forwarded, reuse=ctx.options.server_replay_reuse)
        files = ", ".join(ctx.options.server_replay)
        if not forwarded:
            logger.warning(
                "keyrelay: %s holds nothing to replay (%d flows, none forwarded to a "
                "provider): every request gets 502 not-recorded",
                files,
                len(flows),
            )
            return
        logger.info(
            "keyrelay: replaying %d recorded responses from %s (%d flows skipped: not "
            "forwarded); serving until stopped",
            len(forwarded),
            files,
            len(flows) - len(forwarded),
        )

    def requestheaders(self, flow: http.HTTPFlow) -> Refusal | None:
        """mitmweb's Replay button (client replay) re-sends the request as keyrelay forwarded
        it, to the provider's URL, its key masked: keyrelay would route it nowhere, or could
        inject a key into an edited request unchecked. Refused, saying what works instead."""
        if flow.is_replay != "request":
            return None
        return Refusal(
            400,
            "replay-not-supported",
            "mitmweb's Replay re-sends the request keyrelay forwarded (the provider's URL, its "
            "key masked), not the client's; send the client's request again instead (the "
            "flow's comment shows what it sent)",
        )

    def request(self, flow: http.HTTPFlow) -> Refusal | None:
        """request (routed, body whole): the recorded response, or a refusal saying why not."""
        if not self.on or flow.response is not None:
            return None
        asked = shape(flow.request)
        recorded = self.recording.take(asked)
        if recorded is None:
            return Refusal(502, "not-recorded", self.recording.why_not(asked))
        response = recorded.copy()
        if ctx.options.server_replay_refresh:
            response.refresh()
        flow.response = response  # as mitmproxy's server replay does: the upstream's answer
        flow.is_replay = "response"
        return None

    def failed(self) -> Refusal | None:
        """error: in replay mode, a flow that tried the network was not recorded."""
        return NOT_RECORDED if self.on else None

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Replay mode never reaches the network: a request with no recording is refused."""
        if self.on:
            data.server.error = NOT_RECORDED.detail  # the flow's error page says it (relay)
