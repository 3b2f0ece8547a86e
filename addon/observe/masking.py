"""Masking every secret before a flow is stored or shown: the injected keys, keys an upstream
echoes back (in streams too), keyrelay's admin token, and the client's own credential.

Save (`-w`), HAR export and mitmweb read the flow after the script's `response` / `error` /
`websocket_end` / `done` hooks, so masking there keeps secrets out of everything afterwards.
The client's credential is remembered in this object's memory, keyed by flow id, and dropped
when the flow ends; flow.metadata never holds one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mitmproxy import http

from addon.config.credential import CLIENT_CREDENTIAL_HEADERS
from addon.config.rules import Rules
from addon.flowlocal import FlowLocal
from addon.keys.store import KeyStore
from addon.observe import redaction
from addon.transport.component import add_stage, websocket_open

Current = Callable[[], tuple[Rules | None, KeyStore | None]]
_NO_SECRETS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _OwnSecrets:
    rules: Rules | None
    held: Mapping[str, str]  # what KeyStore.secrets() answered: the same object until a change
    secrets: dict[str, str]
    masks: redaction.Masks


@dataclass
class _Client:
    secrets: dict[str, str]  # the client's own credentials
    masks: redaction.Masks | None = None  # with keyrelay's own, once asked for...
    made_with: _OwnSecrets | None = None  # ...and which of keyrelay's own they hold


class Masking:
    def __init__(self, current: Current) -> None:
        self._current = current
        self._client: FlowLocal[_Client] = FlowLocal("masking.client", walked=True)
        # Open WebSockets, for `done`.
        self._sockets: FlowLocal[bool] = FlowLocal("masking.sockets", walked=True)
        self._own: _OwnSecrets | None = None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Before routing strips them: remember the client's credentials, to mask them later."""
        request = flow.request
        secrets = redaction.client_credentials(request.headers, self._names())
        if "?" in request.path:
            secrets.update(redaction.query_credentials(request.path))
        self._client.set(flow, _Client(secrets))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """A key an upstream echoes must not reach the client either: the head goes out right
        after this hook, the body chunk by chunk. Only keyrelay's own secrets: the client's are
        the client's to see, and they would let it choose what the stream waits for."""
        response = flow.response
        if response is None or not response.stream:
            return
        masks = self.own().masks
        redaction.scrub_headers(response.headers, masks)
        scrub = redaction.StreamScrubber(masks)
        add_stage(response, "mask", lambda data: scrub(data, end=not data))

    def masks(self, flow: http.HTTPFlow) -> redaction.Masks:
        """Every secret this flow may carry, made ready once for all of its fields (the access
        log line and the flow itself ask for them in turn)."""
        ours = self.own()
        client = self._client.get(flow)
        if client is None or not client.secrets:
            return ours.masks
        if client.masks is None or client.made_with is not ours:
            client.masks = redaction.Masks({**client.secrets, **ours.secrets})
            client.made_with = ours
        return client.masks

    def response(self, flow: http.HTTPFlow) -> None:
        # The client's own credentials on the request side only: a buffered response still goes
        # to that client, and what it sent must not reshape what it gets.
        everything = self.masks(flow)
        self._client.pop(flow)
        redaction.scrub_flow(flow, self.own().masks, everything)
        redaction.scrub_oversized_credentials(flow.request.headers, self._names())
        if websocket_open(flow):  # `response` ran on its 101: messages are still to come
            self._sockets.set(flow, True)

    error = response

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A key the upstream echoes in a WebSocket message is masked before the client gets
        it (a message is relayed after this hook, whole: its length may change)."""
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if message.from_client:
            return
        masked = redaction.scrub_bytes(message.content, self.own().masks)
        if masked != message.content:
            message.content = masked

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """Save writes a WebSocket flow again at its end, messages included: mask them too."""
        self._sockets.pop(flow)
        redaction.scrub_flow(flow, self.own().masks)

    def done(self) -> None:
        """Flows still open at shutdown are saved by Save's `done`, after this: mask them now,
        open WebSockets' messages included."""
        for flow, _ in self._client.items():
            self.response(flow)  # type: ignore[arg-type]  # only HTTP flows are put here
        for flow, _ in self._sockets.items():
            self.websocket_end(flow)  # type: ignore[arg-type]

    def _names(self) -> frozenset[str]:
        """Where a client's credentials are: the rules say (auth headers of their own)."""
        rules, _ = self._current()
        return rules.credential_headers if rules is not None else CLIENT_CREDENTIAL_HEADERS

    def own(self) -> _OwnSecrets:
        """The admin token and every key: the same until the rules or a key change."""
        rules, keys = self._current()
        held = keys.secrets() if keys is not None else _NO_SECRETS
        cached = self._own
        if cached is not None and cached.rules is rules and cached.held is held:
            return cached
        secrets: dict[str, str] = {}
        if rules is not None and (token := rules.admin.token_value(rules.env)):
            secrets[token] = "<KEYRELAY_ADMIN_TOKEN>"
        secrets.update(held)
        self._own = _OwnSecrets(rules, held, secrets, redaction.Masks(secrets))
        return self._own
