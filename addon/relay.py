"""The mitmproxy addon: thin wiring from hooks to the pure modules beside it.

`requestheaders` decides everything about a request (answer it here, or route it and inject
the key); `responseheaders` settles the response head; `response` / `error` close the books.
Every hook fails closed: mitmproxy forwards a flow whose hook raised, so each one catches
its own errors and answers a 500 problem instead.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from addon import connect_to, cors_flow, errorpage
from addon.config_node import ConfigError
from addon.early_refusal import EarlyRefusals
from addon.forwarding import upstream_headers
from addon.guard import Guard
from addon.keys import KeyStore
from addon.observe import Observer
from addon.problems import Refusal
from addon.routing import Route, Router
from addon.rules import Rules
from addon.rules import load as load_rules
from addon.transport import Fidelity

logger = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules.yaml"
RELOAD_INTERVAL = 1.0
STATE = "keyrelay"  # flow.metadata key: what keyrelay decided, never a secret


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an exception in a flow hook into a 500 problem that is never forwarded."""

    def internal_error(flow: http.HTTPFlow) -> None:
        logger.exception("keyrelay: internal error in %s", hook.__name__)
        flow.metadata.setdefault(STATE, {})["decision"] = "refused: internal-error"
        answer(flow, Refusal(500, "internal-error", "keyrelay failed to handle this request"))

    if inspect.iscoroutinefunction(hook):  # async hooks (authentication may await a service)

        @functools.wraps(hook)
        async def guarded_async(self: KeyRelay, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception:
                internal_error(flow)

        return guarded_async

    @functools.wraps(hook)
    def guarded(self: KeyRelay, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception:
            internal_error(flow)

    return guarded


def answer(flow: http.HTTPFlow, refusal: Refusal) -> None:
    # Without `Expect: 100-continue` mitmproxy does not invite a body nobody will read.
    flow.request.headers.pop("expect", None)
    headers = {"content-type": "application/json", **dict(refusal.headers)}
    if flow.response is not None:
        flow.response.stream = False
    # An answered request is never streamed upstream (mitmproxy refuses both at once, crashing).
    flow.request.stream = False
    flow.response = http.Response.make(refusal.status, refusal.body(), headers)
    cors_flow.decorate(flow)  # an allowed origin must be able to read the problem
    state = flow.metadata.setdefault(STATE, {})
    state["decision"] = f"refused: {refusal.reason}"


class KeyRelay:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.router: Router | None = None
        self.keys: KeyStore | None = None
        self.guard: Guard | None = None  # auth, limits, body rules (addon/guard.py)
        self.connect_to: dict[connect_to.Address, connect_to.Address] = {}
        self._original_address: dict[str, connect_to.Address] = {}
        self._rules_stamp: tuple[float, float] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.observe = Observer(lambda: (self.rules, self.keys), answer)
        self.transport = Fidelity()  # streams, encodings, size limit, timeouts
        self.early = EarlyRefusals()  # refusals that must not wait for a large body

    # -- options ---------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        errorpage.install()
        self.observe.load(loader)
        loader.add_option(
            "keyrelay_rules", str, str(DEFAULT_RULES), "Path of keyrelay's rules file."
        )
        loader.add_option(
            "keyrelay_connect_to",
            Sequence[str],
            [],
            "HOST:PORT=ADDR:PORT: connect to ADDR:PORT when the upstream is HOST:PORT; "
            "Host, SNI and certificate checks still use HOST. Repeat for more.",
        )

    def configure(self, updated: set[str]) -> None:
        self.observe.configure(updated)
        # mitmproxy silently keeps unknown `--set` names for later; a misspelt keyrelay option
        # (say keyrelay_conect_to) would otherwise send traffic to the real providers.
        if misspelt := sorted(k for k in ctx.options.deferred if k.startswith("keyrelay_")):
            raise exceptions.OptionsError(f"{misspelt[0]}: unknown keyrelay option")
        if "keyrelay_connect_to" in updated:
            try:
                self.connect_to = connect_to.parse(ctx.options.keyrelay_connect_to)
            except ValueError as e:
                raise exceptions.OptionsError(f"keyrelay_connect_to: {e}") from None
        if "keyrelay_rules" in updated or "keyrelay_replay" in updated:
            try:
                self._install(self._read_rules())
            except ConfigError as e:
                raise exceptions.OptionsError(f"keyrelay_rules: {e}") from None
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager mode connects to the reverse-mode target before keyrelay has routed.
            ctx.options.update(connection_strategy="lazy")
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            # Reverse mode would overwrite the client's Host with the reverse-mode target before
            # keyrelay sees it; keyrelay sets Host itself for every request it forwards, and
            # needs the client's to tell a page on keyrelay's own origin (cors.refuses).
            ctx.options.update(keep_host_header=True)

    def running(self) -> None:
        self.observe.running()
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_rules())
        if self.guard:
            self.guard.start()

    def done(self) -> None:
        self.observe.done()
        if self.keys:
            self.keys.stop()  # file watchers, key commands
        if self.guard:
            self.guard.stop()
        if self._watcher:
            self._watcher.cancel()

    def _read_rules(self) -> Rules:
        path = Path(ctx.options.keyrelay_rules)
        self._rules_stamp = _stamp(path)
        return load_rules(path, dict(os.environ))

    def _install(self, rules: Rules) -> None:
        keys = KeyStore(self.observe.keyed_rules(rules), self.keys)  # keeps live sources
        self.guard = Guard(rules, self.guard)
        self.guard.warn_if_exposed(ctx.options.listen_host)
        self.rules, self.router, self.keys = rules, Router(rules), keys
        logger.info("keyrelay: %d providers from %s", len(rules.providers), rules.source)
        keys.log_status(rules)

    async def _watch_rules(self) -> None:
        """Reload the rules when the file or its `.env` changes; a broken edit keeps the old."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            path = Path(ctx.options.keyrelay_rules)
            if _stamp(path) == self._rules_stamp:
                continue
            try:
                self._install(self._read_rules())
            except ConfigError as e:
                logger.error("keyrelay: keeping the previous rules: %s", e)
            except Exception:
                logger.exception("keyrelay: keeping the previous rules")

    # -- requests ----------------------------------------------------------------------------

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if refusal := await self._route_and_admit(flow):
            answer(flow, refusal)
        if flow.response is not None:  # answered here: a large body still arriving is not read
            self.early.divert(flow)

    async def _route_and_admit(self, flow: http.HTTPFlow) -> Refusal | None:
        """Route the request and inject the key, or say why not (None: handled)."""
        assert self.router is not None and self.keys is not None and self.guard is not None
        request = flow.request
        state: dict[str, Any] = flow.metadata.setdefault(STATE, {})
        if cors_flow.requestheaders(self.rules, flow, answer):  # preflight: before any auth
            return None
        if self.observe.requestheaders(flow):  # keyrelay's own endpoints
            return None
        decision = self.router.route(request.method, request.path, request.headers.get)
        if isinstance(decision, Refusal):
            return decision
        route: Route = decision
        provider = route.provider
        state["provider"] = provider.name
        if refusal := self.transport.requestheaders(flow, route):  # size limit, streaming
            return refusal
        if refusal := await self.guard.admit(flow, route):  # who may, how often (guard.py)
            return refusal
        key = await self.keys.pick(provider, state)  # tenant, pool or shared key (keys.py)
        if isinstance(key, Refusal):
            return key
        request.headers.fields = upstream_headers(
            request.headers.fields,
            provider,
            provider.credential.header,
            provider.credential.header_value(key.value),
            websocket=request.headers.get("upgrade", "").lower() == "websocket",
        )
        request.scheme, request.host, request.port = route.scheme, route.host, route.port
        request.path = route.path
        request.headers["host"] = (
            route.host if route.port in (80, 443) else f"{route.host}:{route.port}"
        )
        state["upstream"] = f"{route.host}{route.path.partition('?')[0]}"
        state["decision"] = "forwarded"
        return None

    # -- responses ---------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            if self.keys:
                self.keys.feedback(flow)  # a pool key answered 429/401 rests a while
            cors_flow.responseheaders(flow)  # keyrelay's CORS headers, never the upstream's
            self.transport.responseheaders(flow)  # streaming, content-encoding, head fixes
            self.observe.responseheaders(flow)  # keep last: counts what streaming decided
        except Exception:
            # The head may be half rewritten (upstream CORS headers, a stale encoding): an
            # answer is not owed, so the client gets a reset rather than a wrong response.
            logger.exception("keyrelay: internal error in responseheaders")
            flow.kill()

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if self.guard and (refusal := self.guard.check_body(flow)):  # body rules, body whole
            answer(flow, refusal)
        self.transport.request(flow)  # the time to first byte starts now

    def response(self, flow: http.HTTPFlow) -> None:
        _settle(
            flow,
            self.early.forget,
            self.transport.response,  # decodes a buffered body, stops the timers
            self.guard.release if self.guard else None,  # frees the concurrency slot
            self.observe.response,  # masks every secret, logs, counts
        )

    def error(self, flow: http.HTTPFlow) -> None:
        _settle(
            flow,
            self.early.forget,
            self.transport.error,
            self.guard.release if self.guard else None,
            self.observe.error,
        )

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        # `response` ran on the 101 and left a WebSocket's slot and idle timer to this hook.
        _settle(
            flow,
            self.transport.error,
            self.guard.release if self.guard else None,
            self.observe.websocket_end,  # messages echoing a key, before Save writes them
        )

    # -- upstream connections ----------------------------------------------------------------

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self.early.server_connect(data):  # a diverted refusal: fail it with its problem
            return
        self.observe.server_connect(data)  # replay mode: never the network
        self.transport.server_connect(data)  # connect timeout, HTTP/2 offer
        address = data.server.address
        if address is None:
            return
        destination = self.connect_to.get((address[0].lower(), address[1]))
        if destination:
            self._original_address[data.server.id] = address
            data.server.address = destination

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # mitmproxy reuses a connection only when its address equals the request's (host,
        # port): put the name back once connected, or every request opens a new connection
        # (and the sixth waits forever). Its setter refuses changes on an open connection to
        # stop addons from redirecting one; this only restores the name it was opened for.
        self.transport.server_connected(data)
        original = self._original_address.pop(data.server.id, None)
        if original:
            object.__setattr__(data.server, "address", original)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.transport.server_connected(data)
        self._original_address.pop(data.server.id, None)


def _settle(flow: http.HTTPFlow, *steps: Callable[[http.HTTPFlow], None] | None) -> None:
    """Run every closing step even when one fails: a failure must never skip the masking."""
    for step in steps:
        if step is None:
            continue
        try:
            step(flow)
        except Exception:
            logger.exception("keyrelay: internal error closing a flow")


def _stamp(path: Path) -> tuple[float, float]:
    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return mtime(path), mtime(path.parent / ".env")
