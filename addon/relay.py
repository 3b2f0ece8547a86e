"""The mitmproxy addon: wires mitmproxy's hooks to keyrelay's components, in order.

`requestheaders` decides everything about a request (answer it here, or route it and inject
the key); `request` checks a body that had to be whole; `responseheaders` settles the response
head; `response` / `error` close the books. Components return decisions as values (a Route, a
Key, a Refusal or a Reply); only `answer` here turns one into a response.

Every hook fails closed: mitmproxy forwards a flow whose hook raised, so each one catches its
own errors and answers a 500 problem instead. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from addon import engine, errorpage, flowstate, heap, peer
from addon.budget import usage_endpoint
from addon.budget.component import Budget
from addon.config.model import ConfigError
from addon.config.rules import Rules
from addon.config.rules import load as load_rules
from addon.cors import component as cors
from addon.dispatch import FastDispatch
from addon.fast_paths import FastPaths
from addon.guard.component import Guard
from addon.jobs.component import Ownership
from addon.keys.store import KeyStore
from addon.observe import startup
from addon.observe.access import AccessLog
from addon.observe.admin_endpoints import AdminEndpoints
from addon.observe.masking import Masking
from addon.observe.replay import Replay
from addon.observe.server_timing import ServerTiming
from addon.observe.telemetry import Telemetry
from addon.problems import Answer, Refusal
from addon.resources import Resources
from addon.routing.component import Routing
from addon.routing.connect_to import ConnectTo
from addon.transport import h1_framing, h2_bounds, websocket_close
from addon.transport.component import Transport
from addon.transport.connections import Connections
from addon.transport.drain import Drain
from addon.transport.early_refusal import EarlyRefusals
from addon.transport.head_limit import HeadLimit

logger = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules.yaml"
RELOAD_INTERVAL = 1.0
INTERNAL_ERROR = Refusal(500, "internal-error", "keyrelay failed to handle this request")


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an exception in a flow hook into a 500 problem that is never forwarded."""

    def internal_error(flow: http.HTTPFlow) -> None:
        logger.exception("keyrelay: internal error in %s", hook.__name__)
        answer(flow, INTERNAL_ERROR)

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


def answer(flow: http.HTTPFlow, given: Answer) -> None:
    """Answer the request with a refusal or a reply instead of forwarding it."""
    # Without `Expect: 100-continue` mitmproxy does not invite a body nobody will read.
    flow.request.headers.pop("expect", None)
    if flow.response is not None:
        flow.response.stream = False
    # An answered request is never streamed upstream (mitmproxy refuses both at once, crashing).
    flow.request.stream = False
    state = flowstate.of(flow)
    if isinstance(given, Refusal):
        headers = {"content-type": "application/json", **dict(given.headers)}
        flow.response = http.Response.make(given.status, given.body(), headers)
        flowstate.refused(state, given.reason)
        state["detail"] = given.detail[:300]  # the log names the origin, the reason (the browser
        # hides a 403's body from the page)
    else:
        flow.response = http.Response.make(given.status, given.body, dict(given.headers))
        state["decision"] = given.decision
    if flow.request.method == "HEAD":
        # The head of the answer a GET would get, without its content: over HTTP/2 mitmproxy
        # would send the content, and the client would drop the whole connection.
        flow.response.raw_content = b""
    cors.decorate(flow)  # an allowed origin must be able to read the answer


async def settle(flow: http.HTTPFlow, *steps: Callable[[http.HTTPFlow], Any]) -> None:
    """Run every closing step, in order, even when one fails: a failure must never skip the
    masking. A step may be a coroutine function (recording a job's owner)."""
    for step in steps:
        try:
            if (result := step(flow)) is not None and inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("keyrelay: internal error closing a flow")


class KeyRelay:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.keys: KeyStore | None = None
        self.resources = Resources()  # live key sources, limiter stores, auth caches
        self.replay = Replay()
        self.admin = AdminEndpoints(self._current, self._usage, lambda: not self.drain.draining)
        self.masking = Masking(self._current)
        self.telemetry = Telemetry()  # OpenTelemetry, when the OTEL_* variables ask for it
        self.access = AccessLog(lambda: self.rules, self.masking.masks, self.telemetry)
        self.timing = ServerTiming()  # keyrelay_server_timing
        self.cors = cors.Cors()
        self.routing = Routing()
        self.connect_to = ConnectTo()
        self.transport = Transport()  # streams, encodings, size limit, timeouts
        self.early = EarlyRefusals()  # refusals that must not wait for a large body
        self.engine = engine.Gate()  # an unchecked mitmproxy stops start-up (or runs unprotected)
        self.head_limit = HeadLimit()  # HTTP/1 request heads: 431 past a size
        self.connections = Connections()  # head deadlines, a cap per address, descriptors
        self.guard = Guard()  # auth, limits, body rules
        self.jobs = Ownership()  # whatever a caller creates, only they may read or act on
        self.budget = Budget()  # usage metered, priced; budgets reserved and settled
        self.budget.sidebands.where = self.connect_to.address  # a call's sideband, as flows go
        self.budget.sidebands.refuse = answer  # an answered call it cannot meter
        self.drain = Drain(self._in_flight, self._reload)  # SIGTERM, SIGHUP
        self._rules_stamp: tuple[float, ...] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watched: tuple[Path, ...] = ()  # token and key files the rules name (revocation)
        # The engine tuned: hooks through a table (dispatch.py), per-request steps (fast_paths.py).
        self.addons = [FastDispatch(), FastPaths()]

    def _in_flight(self) -> int:
        """What a drain waits for: requests and streams, and the WebRTC calls keyrelay meters."""
        return self.connections.in_flight() + len(self.budget.sidebands)

    def _current(self) -> tuple[Rules | None, KeyStore | None]:
        return self.rules, self.keys

    async def _usage(self, flow: http.HTTPFlow) -> Answer:
        return await usage_endpoint.usage(self.budget, flow, self.guard.gates)

    # -- options and lifetime ------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        self.engine.load(loader)
        self.drain.load(loader)
        errorpage.install()
        h1_framing.install()  # HTTP/2 bodies without content-length, to HTTP/1 upstreams
        h2_bounds.install()  # HTTP/2 clients: buffered answers, rapid resets
        self.access.load(loader)
        self.timing.load(loader)
        self.replay.load(loader)
        self.connect_to.load(loader)
        self.head_limit.load(loader)
        self.connections.load(loader)
        loader.add_option(
            "keyrelay_rules", str, str(DEFAULT_RULES), "Path of keyrelay's rules file."
        )

    def configure(self, updated: set[str]) -> None:
        self.engine.configure(updated)  # first: it may stop start-up before anything installs
        self.access.configure(updated)
        self.timing.configure(updated)
        self.connect_to.configure(updated)
        self.replay.configure(updated)
        self.head_limit.configure(updated)
        self.connections.configure(updated)
        # mitmproxy silently keeps unknown `--set` names for later; a misspelt keyrelay option
        # (say keyrelay_conect_to) would otherwise send traffic to the real providers.
        if misspelt := sorted(k for k in ctx.options.deferred if k.startswith("keyrelay_")):
            raise exceptions.OptionsError(f"{misspelt[0]}: unknown keyrelay option")
        if "keyrelay_rules" in updated or "keyrelay_replay" in updated:
            try:
                self._install(self._read_rules())
            except ConfigError as e:
                if self.rules is None:
                    # At start: one clear line and a non-zero exit, before anything listens
                    # (mitmproxy would print a traceback, start listening, then exit).
                    print(f"keyrelay_rules: {e}", file=sys.stderr, flush=True)
                    raise SystemExit(2) from None
                raise exceptions.OptionsError(f"keyrelay_rules: {e}") from None
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager mode connects to the reverse-mode target before keyrelay has routed.
            ctx.options.update(connection_strategy="lazy")
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            # Reverse mode would overwrite the client's Host with the reverse-mode target before
            # keyrelay sees it; keyrelay sets Host itself for every request it forwards, and
            # needs the client's to tell a page on keyrelay's own origin (cors.answers.refuses).
            ctx.options.update(keep_host_header=True)

    def running(self) -> None:
        self.drain.running()  # SIGTERM drains, SIGHUP reloads (mitmdump's handlers end at once)
        self.connections.running()  # the open-file limit, before the first client
        heap.freeze_once()
        self.replay.running()
        self.resources.start()
        self.telemetry.running()  # its exporting threads, if OTEL_* asks for them
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_rules())

    async def done(self) -> None:
        await self.budget.done()  # calls still open: settled as cut ones, before they are logged
        self.access.done()  # flows still open: logged, with the masks they need...
        self.masking.done()  # ...then masked, before Save's `done` writes them
        self.telemetry.done()  # what is queued goes out (a few seconds at most)
        self.resources.stop()  # file watchers, key commands, connections
        if self._watcher:
            self._watcher.cancel()

    def _read_rules(self) -> Rules:
        path = Path(ctx.options.keyrelay_rules)
        stamp = _stamp(path)
        rules = load_rules(path, dict(os.environ))
        self._watched = rules.watched_files()
        # What the files were before they were read: a change while reading is seen next time.
        self._rules_stamp = stamp + _stamp_files(self._watched)
        return rules

    def _install(self, rules: Rules) -> None:
        """Build everything the rules need, then switch: a load that fails changes nothing."""
        with self.resources.reload() as live:
            keys = KeyStore(self.replay.keyed_rules(rules), live)
            install_guard = self.guard.prepare(rules, live)
            install_jobs = self.jobs.prepare(rules, live)
            install_budget = self.budget.prepare(rules, live)
        install_guard()
        install_jobs()
        install_budget()
        self.guard.warn_if_exposed(ctx.options.listen_host)
        self.rules, self.keys = rules, keys
        self.budget.ask_for_usage = not self.replay.on  # a recording is replayed as it was
        self.routing.configure_rules(rules, ctx.options.listen_host)
        self.connections.trusted = rules.trusted_proxies  # a balancer is not one client
        self.cors.rules = rules
        logger.info("keyrelay: %d providers from %s", len(rules.providers), rules.source)
        logger.info("%s", startup.summary(rules))  # what is in effect, at start and each reload
        keys.log_status(rules)

    async def _watch_rules(self) -> None:
        """Reload the rules when the file or its `.env` changes; a broken edit keeps the old."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            path = Path(ctx.options.keyrelay_rules)
            if _stamp(path) + _stamp_files(self._watched) == self._rules_stamp:
                continue
            self._reload()

    def _reload(self) -> None:
        """Load the rules again (a change seen, SIGHUP); a broken edit keeps the old."""
        try:
            self._install(self._read_rules())
        except ConfigError as e:
            logger.error("keyrelay: keeping the previous rules: %s", e)
        except Exception:
            logger.exception("keyrelay: keeping the previous rules")

    # -- requests ------------------------------------------------------------------------------

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.rules is not None:  # behind a trusted proxy: who the client is
            peer.resolve(flow, self.rules.trusted_proxies)
        self.connections.requestheaders(flow)  # a head arrived: its deadline is met
        self.access.requestheaders(flow)
        self.masking.requestheaders(flow)  # before routing strips the client's credentials
        given = await self._decide(flow)
        refusal = given if isinstance(given, Refusal) else None
        if given:
            if refusal:
                self.cors.attribute(flow)  # refused before routing: which provider it concerns
            answer(flow, given)
        if flow.response is not None:  # answered here: a large body still arriving is not read
            self.early.divert(flow, refusal)
        self.timing.requestheaders(flow)

    async def _decide(self, flow: http.HTTPFlow) -> Answer | None:
        """Route the request, admit it and inject the key; or the answer instead (in order)."""
        if refusal := self.drain.refusal():  # shutting down: 503, and the connection closes
            return refusal
        if refused := self.replay.requestheaders(flow):  # mitmweb's Replay button: why not
            return refused
        if refusal := self.routing.misdirected(flow):  # DNS rebinding: before anything answers
            return refusal
        if given := self.cors.requestheaders(flow):  # preflights: before any authentication
            return given
        if self.admin.wants(flow) and (given := await self.admin.requestheaders(flow)):
            return given  # keyrelay's own endpoints
        route = self.routing.requestheaders(flow)
        if isinstance(route, Refusal):
            return route
        if refusal := self.transport.requestheaders(flow, route):  # size limit, streaming
            return refusal
        caller = await self.guard.requestheaders(flow, route)  # who may, how often
        if isinstance(caller, Refusal):
            return caller
        if refusal := await self.jobs.requestheaders(flow, route, caller):  # whose job it is
            return refusal
        if refusal := self.budget.requestheaders(flow, route, caller):  # keeps a costly body whole
            return refusal
        assert self.keys is not None
        key = await self.keys.requestheaders(flow, route.provider, caller)  # tenant, pool, shared
        if isinstance(key, Refusal):
            return key
        self.transport.decide_body(flow)  # whole, if a step above reads it; else streamed
        self.routing.forward(flow, route, key.value)
        return None

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        self.early.request(flow)  # a diverted answer whose request turned out whole
        # The body rules on the whole body; in replay mode the recorded answer (or why not);
        # then the budget reserves the worst case (not for a replayed answer: it costs nothing).
        refusal = (
            self.guard.request(flow)
            or await self.jobs.request(flow)  # objects a body names must be the caller's
            or self.replay.request(flow)
            or await self.budget.request(flow)
        )
        if refusal:
            answer(flow, refusal)
        elif flow.is_replay == "response":
            cors.decorate(flow)  # an answer set here skips responseheaders
        self.transport.request(flow)  # the time to first byte starts now
        self.timing.request(flow)  # and keyrelay's own time stops until the answer

    # -- responses -----------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            if self.keys:
                self.keys.responseheaders(flow)  # a pool key's 429/401: read whole, see response
            self.cors.responseheaders(flow)  # keyrelay's CORS headers, never the upstream's
            self.jobs.responseheaders(flow)  # a created object's id: read the answer whole...
            self.transport.responseheaders(flow)  # streaming, content-encoding, head fixes
            self.budget.responseheaders(flow)  # meters the decoded stream as it passes
            self.jobs.tap(flow)  # ...or find it in the decoded stream as it passes
            self.masking.responseheaders(flow)  # keys an upstream echoes, chunk by chunk
            self.access.responseheaders(flow)  # counts the bytes that go out
            self.timing.responseheaders(flow)  # last: a streamed answer's head goes now
        except Exception:
            # The head may be half rewritten (upstream CORS headers, a stale encoding): an
            # answer is not owed, so the client gets a reset rather than a wrong response.
            logger.exception("keyrelay: internal error in responseheaders")
            flow.kill()

    async def response(self, flow: http.HTTPFlow) -> None:
        await settle(
            flow,
            self.early.response,
            self.connections.response,  # the last answer on a connection: a new deadline
            self.transport.response,  # decodes a buffered body, stops the timers
            self._key_feedback,  # a pool key whose 429/401 was about the key rests
            self.jobs.response,  # a submission's owner, before the client has the id
            self.guard.response,  # frees the concurrency slot
            self.budget.response,  # usage and cost into the flow's state; settles the books
            self.timing.response,  # a buffered answer's head goes after this hook
            self.access.response,  # logs and counts (with the masks the flow needs)
            self.masking.response,  # masks every secret before Save or mitmweb see the flow
        )

    def _key_feedback(self, flow: http.HTTPFlow) -> None:
        if self.keys is not None:
            self.keys.response(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await settle(
            flow,
            self._error_page,  # first: early.error forgets a diverted refusal's headers
            self.early.error,
            self.connections.error,
            self.transport.error,
            self.jobs.error,
            self.guard.error,
            self.budget.error,
            self.timing.error,
            self.access.error,
            self.masking.error,
        )

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        try:
            self.masking.websocket_message(flow)  # a key the upstream echoes
            await self.budget.websocket_message(flow)  # a metered session: reserve, settle
            websocket_close.closing(flow)  # keyrelay's last message: the close goes behind it
        except Exception:
            # Unmasked, the message must not go on: drop it and end the socket.
            logger.exception("keyrelay: internal error in websocket_message")
            assert flow.websocket is not None
            flow.websocket.messages[-1].drop()
            flow.kill()

    def _error_page(self, flow: http.HTTPFlow) -> None:
        """mitmproxy answers a failed flow itself, right after this hook (errorpage.py): with
        the provider named and the headers the client needs to read it."""
        if flow.error is None:
            return
        provider = flowstate.of(flow).get("provider")
        if diverted := self.early.diverted(flow):  # refused while a large body arrived
            errorpage.expect(flow, provider, *diverted)
            return
        # A timeout (mitmproxy says "connection closed"), replay mode: keyrelay's own answer.
        own = self.transport.expired(flow) or self.replay.failed()
        page = errorpage.page(own) if own else None
        errorpage.expect(flow, provider, cors.answer_headers(flow), page)

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        # `response` ran on the 101 and left a WebSocket's slot and idle timer to this hook.
        await settle(
            flow,
            self.connections.websocket_end,
            self.transport.error,
            self.guard.websocket_end,
            self.budget.websocket_end,
            self.access.websocket_end,  # a metered session's usage and cost, once settled
            self.masking.websocket_end,  # messages echoing a key, before Save writes them
        )

    # -- connections ---------------------------------------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        self.connections.client_connected(client)  # over the cap per address: refused

    def client_disconnected(self, client: connection.Client) -> None:
        self.connections.client_disconnected(client)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self.early.server_connect(data):  # a diverted refusal: fail it with its problem
            return
        self.replay.server_connect(data)  # replay mode: never the network
        self.transport.server_connect(data)  # connect timeout, HTTP/2 offer
        self.connect_to.server_connect(data)  # last: the others see the provider's address

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.transport.server_connected(data)
        self.connect_to.server_connected(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.transport.server_connected(data)
        self.connect_to.server_connect_error(data)

    def tls_established_server(self, data: tls.TlsData) -> None:
        self.transport.tls_done(data)  # the connect timeout covers the handshake

    tls_failed_server = tls_established_server


def _stamp(path: Path) -> tuple[float, ...]:
    return _stamp_files((path, path.parent / ".env"))


def _stamp_files(paths: tuple[Path, ...]) -> tuple[float, ...]:
    """Each file's modification time and size (0 when missing): an edit within the clock's
    resolution still changes the size, usually."""
    stamps: list[float] = []
    for p in paths:
        try:
            stat = p.stat()
        except OSError:
            stamps += (0.0, -1.0)
        else:
            stamps += (stat.st_mtime_ns / 1e9, float(stat.st_size))
    return tuple(stamps)
