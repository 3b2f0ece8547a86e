"""Who may spend the keys, how fast, and on what: authentication, rate limits and body rules,
on flows.

Order in `requestheaders`: authenticate (401/403) -> check the body can be validated (411/413/
415) -> charge the rate limits (429, or 503 when the shared store is down and failing closed).
The body rules run in `request`, once the (kept buffered) body is complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from mitmproxy import ctx, http
from mitmproxy.utils import human

from addon import flowstate, header_index, peer, tasks
from addon.auth.gate import AuthSetupError, Gate
from addon.auth.identity import anonymous
from addon.caller import Caller
from addon.config.model import ConfigError
from addon.config.operations import MintSpec
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.cors import answers
from addon.flowlocal import FlowLocal
from addon.guard import body_rules, call_offer, mints, runware, token_grants
from addon.problems import Refusal
from addon.ratelimit.limiter import Admitted, Limiter, make_store
from addon.resources import Generation
from addon.routing.router import Route
from addon.routing.server_names import is_loopback
from addon.targets import Target
from addon.transport.component import keep_whole, websocket_open

logger = logging.getLogger(__name__)


class Guard:
    """Lives as long as the process; `prepare` builds each rules load's gates and limiter."""

    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.gates: dict[str, Gate] = {}
        self.limiter: Limiter | None = None
        # Open requests holding a concurrency slot; they outlive a rules reload.
        self._open: FlowLocal[Admitted] = FlowLocal("guard.open")
        self._mints: FlowLocal[MintSpec] = FlowLocal("guard.mints")  # a credential to check
        self._offers: FlowLocal[bool] = FlowLocal("guard.offers")  # a call's offer to check

    def prepare(self, rules: Rules, live: Generation) -> Callable[[], None]:
        """Build this load's gates and limiter; the returned call installs them."""
        try:
            gates = {p.name: Gate(p.auth, rules.env, live, p.name) for p in rules.providers}
        except AuthSetupError as e:
            raise ConfigError(str(rules.source), "auth", str(e)) from e
        backend = rules.limits_backend
        store = live.get(("limits-store", backend), lambda: make_store(backend))
        limiter = Limiter(backend, store)

        def install() -> None:
            self.providers = {p.name: p for p in rules.providers}
            self.gates, self.limiter = gates, limiter

        return install

    def warn_if_exposed(self, listen_host: str) -> None:
        open_providers = [p.name for p in self.providers.values() if p.auth.mode == "none"]
        if open_providers and not is_loopback(listen_host):
            logger.warning(
                "keyrelay: WARNING: listening on %s with NO client authentication for %s: "
                "anyone who can reach this address can spend those keys. Set auth: in rules.yaml.",
                listen_host or "all interfaces",
                ", ".join(open_providers),
            )

    # -- hooks --------------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow, route: Route) -> Caller | Refusal:
        """requestheaders, once routed: who is calling (the request goes on), or the refusal."""
        request = flow.request
        header = header_index.lookup(request.headers)
        provider = route.provider
        ip = peer.address(flow)
        if answers.is_preflight(request.method, header):
            # CORS preflights carry no credentials (cors.py answers them before routing; one
            # that got here is nobody's).
            return Caller(str(anonymous(ip)))
        identity = await self.gates[provider.name].authenticate(
            request.method, request.path, header, ip
        )
        if isinstance(identity, Refusal):
            return identity
        tenants = provider.credential.tenants
        claims = {}
        if tenants and tenants.claim and _tenant_claim(identity.claims.get(tenants.claim)):
            claims[tenants.claim] = str(identity.claims[tenants.claim])
        caller = Caller(str(identity), claims)
        state = flowstate.of(flow)
        state["identity"] = caller.identity  # for the access log and mitmweb
        if claims:
            state["claims"] = claims  # only the claim that picks the tenant's key: saved with flows

        path, _, query = route.path.partition("?")
        # A metered session's messages are read: its model changes and output caps are held
        # to the rules there (budget/sessions.py); any other WebSocket's are not, nor those of
        # an ElevenLabs text-to-speech session, whose model is its URL's.
        operation = route.operation
        unread = header_index.asks_for_websocket(request.headers) and not (
            operation is not None
            and operation.meter == "session"
            and operation.protocol != "elevenlabs-stream-input"
        )
        if refusal := body_rules.check_path(provider.validation, path):
            return refusal
        if refusal := body_rules.check_query(provider.validation, query, websocket=unread):
            return refusal
        mints_token = _mints_token(provider, request.method, route.host, route.path)
        mint = route.operation.mint if route.operation else None
        if mint is not None:
            self._mints.set(flow, mint)
        offer = route.operation is not None and route.operation.kind == "call"
        if offer:
            self._offers.set(flow, True)
        if (
            provider.validation.reads_body
            or mints_token
            or mint
            or offer
            or provider.tasks is not None
        ):
            max_body = provider.validation.max_body
            get_all = request.headers.get_all
            if refusal := body_rules.prepare(max_body, request.method, get_all, buffer_limit()):
                return refusal
            keep_whole(flow)  # the `request` hook checks it whole
        assert self.limiter is not None
        admitted = await self.limiter.admit(
            provider.limits,
            provider.name,
            str(identity),
            request.method,
            Target(route.host, path, query),
        )
        if isinstance(admitted, Refusal):
            return admitted
        if admitted.slots is not None:
            self._open.set(flow, admitted)
        return caller

    def request(self, flow: http.HTTPFlow) -> Refusal | None:
        """The body rules, on the complete body."""
        provider, request = self._provider_of(flow), flow.request
        if (
            flow.response is not None
            or provider is None
            or flowstate.of(flow).get("decision") == "refused"
        ):
            return None
        # The request was rewritten for its upstream in requestheaders (relay.py).
        mints_token = _mints_token(provider, request.method, request.host, request.path)
        mint = self._mints.pop(flow)
        offer = self._offers.pop(flow)
        if not (provider.validation.reads_body or mints_token or mint or offer or provider.tasks):
            return None
        if request.stream:
            # Already sent upstream: prepare() should have made this impossible.
            logger.error("keyrelay: a body that needed checking was streamed")
            return Refusal(500, "internal-error", "the body could not be checked")
        content_types, body = request.headers.get_all("content-type"), request.raw_content or b""
        if provider.tasks is not None:
            return _check_tasks(provider, request, body)
        if offer:  # an SDP offer, its model in a session part (guard/call_offer.py)
            query = request.path.partition("?")[2]
            return call_offer.check(provider.validation, content_types, body, query)
        refusal = body_rules.check_body(provider.validation, content_types, body)
        if refusal is None and mints_token:
            refusal = token_grants.check(provider.endpoints, content_types, body)
        if refusal is None and mint is not None:
            refusal = _check_mint(provider, mint, request, body)
        return refusal

    def response(self, flow: http.HTTPFlow) -> None:
        """Give back the request's concurrency slot. A WebSocket holds it until it closes:
        `response` runs on its 101, the socket stays open; `websocket_end` gives it back."""
        self._mints.pop(flow)  # refused before its body was checked
        self._offers.pop(flow)
        if websocket_open(flow):
            return
        admitted = self._open.pop(flow)
        if admitted is not None and self.limiter is not None:
            tasks.spawn(self.limiter.release(admitted))

    error = websocket_end = response

    def _provider_of(self, flow: http.HTTPFlow) -> Provider | None:
        name = flowstate.of(flow).get("provider")
        return self.providers.get(name) if name else None


def _check_tasks(provider: Provider, request: http.Request, body: bytes) -> Refusal | None:
    """An array of tasks (Runware): each checked; what goes upstream is what was checked,
    without the client's authentication tasks."""
    assert provider.tasks is not None
    tasks = runware.checked(provider.validation, provider.tasks, body)
    if isinstance(tasks, Refusal):
        return tasks
    request.content = runware.encode(tasks)
    return None


def _check_mint(
    provider: Provider, mint: MintSpec, request: http.Request, body: bytes
) -> Refusal | None:
    """A credential minted for a browser: its model and lifetime held to the rules; what goes
    upstream is the body as checked (its lifetime lowered to the cap where it asked for more)."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return Refusal(400, "invalid-json", "the request for a credential is not JSON")
    checked = mints.check(mint, provider.validation, data, datetime.now(UTC))
    if isinstance(checked, Refusal):
        return checked
    if checked is not data:
        request.content = json.dumps(checked).encode()
    return None


def _mints_token(provider: Provider, method: str, host: str, path: str) -> bool:
    """A request for a fal token, which must stay within the endpoint allowlist."""
    return token_grants.applies(provider.endpoints, method, host, path)


def buffer_limit() -> int | None:
    """mitmproxy starts streaming a buffered body past `stream_large_bodies`: stay below it."""
    try:
        return human.parse_size(ctx.options.stream_large_bodies)
    except (AttributeError, ValueError):
        return None


def _tenant_claim(value: object) -> bool:
    """A claim that can name a tenant: a string or a whole number, never a boolean."""
    return not isinstance(value, bool) and isinstance(value, str | int) and str(value) != ""
