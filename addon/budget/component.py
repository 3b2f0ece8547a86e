"""Metering and budgets on flows.

`requestheaders` (after the guard: the caller is known) keeps a body that a budget or the
usage of a streamed chat completion depends on buffered; `request` reads it, asks OpenAI for a
stream's usage when the client did not, and reserves the worst case (or refuses: 429
`budget-exhausted`); `responseheaders` meters the head and the stream as it passes; `response`
and `error` settle: the metered cost, or the whole reservation for a stream cut before its
final usage. The figures go into the flow's state, where the access log and metrics read them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mitmproxy import connection, http

from addon import flowstate, header_index, tasks
from addon.budget import alerts_setup, jobs, reading, refusals
from addon.budget.alerts_watch import AlertWatch
from addon.budget.books import (
    GRACE,
    LEASE_SECONDS,
    RENEW_EVERY,
    Account,
    BudgetStore,
    Lease,
    Period,
    account_key,
    periods,
)
from addon.budget.calls import Call, retrying
from addon.budget.memory import MemoryBooks
from addon.budget.redis_store import RedisBooks
from addon.budget.sessions import Sessions
from addon.budget.sideband import Sidebands, is_offer
from addon.budget.task_arrays import TaskArrays
from addon.caller import Caller
from addon.config.budget import BudgetSpec
from addon.config.limits import BackendSpec
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.flowlocal import FlowLocal
from addon.guard import body_rules
from addon.guard.component import buffer_limit
from addon.jobs.owners import Owners, make_owners
from addon.metering import gemini, prices
from addon.metering.stream import StreamMeter
from addon.metering.usage import from_body, from_headers
from addon.problems import Refusal
from addon.ratelimit.backend import StoreError
from addon.redis_client import Every
from addon.resources import Generation
from addon.routing.router import Route
from addon.transport.component import (
    add_stage,
    is_event_stream,
    keep_whole,
    websocket_open,
)

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0
CHAT_COMPLETIONS = "/chat/completions"
SHUTDOWN_WAIT = 5.0  # seconds shutdown waits for settlements to reach the books
# Meters whose answer carries the usage (a job's, its result: the submit holds for it), and a
# minted key's, whose answer never does: an answered call of these with no usage is charged its
# reservation.
_ANSWER_METERED = ("tokens", "characters", "images", "units", "minutes")
# Output tokens a stopped stream is charged beyond what it passed on: those the provider made
# before it saw the stop.
CUT_MARGIN = 128


def make_books(spec: BackendSpec) -> BudgetStore:
    if spec.redis is None:
        return MemoryBooks()
    return RedisBooks(
        spec.redis, prefix=spec.prefix, timeout=spec.timeout, connections=spec.connections
    )


class Budget(TaskArrays):
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.books: BudgetStore | None = None
        self.owners: Owners | None = None  # the jobs' store: whose tasks asked for their cost
        self.alerts: AlertWatch | None = None  # spend alerts, raised after a charge settles
        self._calls: FlowLocal[Call] = FlowLocal("budget.calls", walked=True)
        self._renewing: asyncio.Task[None] | None = None
        self._warned: set[tuple[str, str]] = set()
        self._log = Every(LOG_EVERY)
        # Off in replay mode: a recording holds what clients sent, and the replay matches on it.
        self.ask_for_usage = True
        self.sessions = Sessions(lambda: self.books, self.unavailable)  # metered WebSockets
        self.sidebands = Sidebands(self.sessions)  # WebRTC calls, metered from their sidebands

    def prepare(self, rules: Rules, live: Generation) -> Callable[[], None]:
        backend = rules.limits_backend
        books = None
        if rules.keeps_books:
            books = live.get(("budget-books", backend), lambda: make_books(backend))
        owners = live.get(("job-owners", backend), lambda: make_owners(backend))  # jobs' own
        alerts = alerts_setup.watch(rules, live) if books is not None else None

        def install() -> None:
            self.rules, self.books, self.owners, self.alerts = rules, books, owners, alerts

        return install

    def limited(self, provider: Provider) -> bool:
        return self.books is not None and bool(
            (self.rules and self.rules.budget.active) or provider.budget.active
        )

    def accounts(self, identity: str, provider: Provider, now: datetime) -> tuple[Account, ...]:
        top = self.rules.budget if self.rules else BudgetSpec()
        return tuple(
            Account(
                account_key(identity, period),
                period.seconds_left(now) + GRACE,
                _nano(getattr(top, period.name)),
                _nano(getattr(provider.budget, period.name)),
                identity,
                period.ident,
            )
            for period in periods(now)
        )

    # -- hooks --------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow, route: Route, caller: Caller) -> Refusal | None:
        """Once the guard has admitted the request. A refusal: its body cannot be buffered, or
        under a budget, what keyrelay cannot meter (a WebSocket, an unpriceable operation)."""
        request, provider = flow.request, route.provider
        endpoint = route.path.partition("?")[0][1:]
        call = Call(provider, caller.identity, endpoint, route.host, route.operation)
        if self.limited(provider) and (refusal := refusals.unmeterable(request, route)):
            return refusal
        self._calls.set(flow, call)
        if request.method not in body_rules.BODY_METHODS:
            return None
        get_all = request.headers.get_all
        limit = provider.validation.max_body
        if self.limited(provider):
            refusal = body_rules.prepare(limit, request.method, get_all, buffer_limit())
            if refusal is not None:
                return refusal
        elif not _chat(call.endpoint) or body_rules.prepare(
            limit, request.method, get_all, buffer_limit()
        ):
            return None  # a chat stream's usage only where its body can be read safely
        keep_whole(flow)
        return None

    async def request(self, flow: http.HTTPFlow) -> Refusal | None:
        """The whole body: ask for a chat stream's usage, then reserve the worst case."""
        call = self._calls.get(flow)
        request = flow.request
        if call is None or flow.response is not None:
            return None
        if call.provider.tasks is not None:
            return await self._tasks(flow, call)
        if call.operation is not None and call.operation.meter == "session":
            return await self._open_session(flow, call)
        body = b"" if request.stream else (request.raw_content or b"")  # streamed: no cost in it
        # A stream key is `"stream"` or spelt with a \u escape: only such a body is parsed to
        # find out (parsed, not byte-searched: `"str\u0065am"` is a stream too).
        chat = (
            self.ask_for_usage and _chat(call.endpoint) and (b'"stream"' in body or b"\\u" in body)
        )
        limited = self.limited(call.provider)
        facts, data, form = prices.RequestFacts(), None, False
        if chat or limited or (call.provider.prices and body):  # else nothing depends on it
            read = reading.read(request, body, call.operation)  # parsed, never byte-searched
            if isinstance(read, Refusal):
                if limited:
                    self._calls.pop(flow)
                    return read
            else:
                facts, data, form = read
        call.model, call.hidden = facts.model, facts.hidden_output
        if asked := facts.model or gemini.path_model(call.endpoint):  # Gemini's is in its path
            flowstate.of(flow)["request_model"] = asked[:100]
        if limited and data is not None and (refusal := refusals.unreadable(data)):
            self._calls.pop(flow)
            return refusal
        if refusal := await self._reserve(flow, call, facts, limited):
            return refusal
        if data is None or form or not self.ask_for_usage:
            return None
        rewrite = False
        if chat and _wants_usage(data):
            data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
            call.strip = rewrite = True
        cap = call.operation.output_cap if call.operation else None
        if cap and call.lease == flow.id and facts.max_output is None:
            # What was reserved assumed this cap: the provider's own default may be higher.
            data[cap] = prices.output_tokens(facts, call.provider.validation.max_tokens)
            rewrite = True
        if rewrite:
            call.client_body = body
            request.content = json.dumps(data).encode()
        return None

    async def _open_session(self, flow: http.HTTPFlow, call: Call) -> Refusal | None:
        """A metered WebSocket session, or a WebRTC call's offer (metered from its sideband):
        its first response reserved (budget/sessions.py, budget/sideband.py)."""
        limited = self.limited(call.provider)
        if self.books is not None:
            call.accounts = self.accounts(call.identity, call.provider, datetime.now(UTC))
        if is_offer(call):
            refusal = await self.sidebands.offer(flow, call, limited)
        else:
            refusal = await self.sessions.open(flow, call, limited)
        if refusal is not None:
            self._calls.pop(flow)
        elif limited and self._renewing is None:
            self._renewing = tasks.spawn(self._renew())
        return refusal

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A metered session's message: responses reserved before they start, settled as
        their usage arrives."""
        call = self._calls.get(flow)
        if call is not None:
            await self.sessions.message(flow, call)

    async def _reserve(
        self, flow: http.HTTPFlow, call: Call, facts: prices.RequestFacts, limited: bool
    ) -> Refusal | None:
        if self.books is None:
            return None
        now = datetime.now(UTC)
        call.accounts = self.accounts(call.identity, call.provider, now)
        method, provider = flow.request.method, call.provider
        meter = call.operation.meter if call.operation else None
        if not limited or meter == "free":
            return None
        price = prices.price_for(provider.prices, facts.model, call.endpoint)
        if price is not None and not price.covers(meter):
            price = None  # it matched, with no rate for what this operation counts
        if price is not None and facts.searches and not price.search:
            price = None  # it may search, and searches have no price
        if price is None:  # never free: what cannot be priced is refused
            self._calls.pop(flow)
            name = call.operation.name if call.operation else method
            return refusals.unpriced(provider.name, name, facts.model or call.endpoint)
        if method not in body_rules.BODY_METHODS and facts.key_seconds is None:
            # A read whose answer carries the cost (fal's result): settled then, against what
            # its job holds (its submit's worst case).
            call.lease = jobs.lease_fetched(
                provider, call.operation, method, call.host, "/" + call.endpoint
            )
            if call.lease:
                call.reserved = prices.worst_case(price, facts, None, "POST")
            return None
        amount = prices.worst_case(price, facts, provider.validation.max_tokens, method)
        return await self._take(flow, call, amount, now)

    async def _take(
        self, flow: http.HTTPFlow, call: Call, amount: int, now: datetime
    ) -> Refusal | None:
        """Reserve `amount` under the flow's lease, or the refusal when it does not fit."""
        assert self.books is not None
        provider = call.provider
        try:
            lease = Lease(flow.id, LEASE_SECONDS)
            blocked = await self.books.reserve(call.accounts, provider.name, amount, lease)
        except StoreError as e:
            return self.unavailable(e, call)
        if blocked:
            self._calls.pop(flow)
            account = call.accounts[blocked - 1]
            period = periods(now)[blocked - 1]
            if (limit := _tightest(account)) is not None and amount > limit:
                return await self._exceeds(account, provider.name, period, amount, limit)
            return refusals.exhausted(period, now)
        call.reserved, call.lease = amount, flow.id
        if self._renewing is None:
            self._renewing = tasks.spawn(self._renew())
        return None

    async def _renew(self) -> None:
        """While calls run, their leases are renewed; when none holds one, this ends (the
        next reservation starts it again)."""
        try:
            while True:
                await asyncio.sleep(RENEW_EVERY)
                held: dict[tuple[Account, ...], list[str]] = {}
                for flow, call in self._calls.items():
                    if call.lease == flow.id:
                        held.setdefault(call.accounts, []).append(flow.id)
                    elif (session := self.sessions.of(flow)) and (leases := session.leases()):
                        held.setdefault(call.accounts, []).extend(leases)
                for call, leases in self.sidebands.held():
                    held.setdefault(call.accounts, []).extend(leases)
                if not held or self.books is None:
                    return
                for accounts, leases in held.items():
                    try:
                        await self.books.renew(accounts, tuple(leases))
                    except StoreError as e:
                        if self._log(e.kind):
                            logger.error("keyrelay: budget: leases not renewed (%s)", e)
        finally:
            self._renewing = None

    async def _exceeds(
        self, account: Account, provider: str, period: Period, amount: int, limit: int
    ) -> Refusal:
        """The 403 for a request no wait makes fit, with what is left, read from the books."""
        assert self.books is not None
        try:
            fields = (await self.books.read((account.key,)))[0]
        except StoreError:
            fields = {}
        held = max(
            fields.get("spent", 0) + fields.get("reserved", 0),
            fields.get(f"spent:{provider}", 0) + fields.get(f"reserved:{provider}", 0),
        )
        return refusals.exceeds(period, amount, limit, max(0, limit - held))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Usage in the head; a stream metered chunk by chunk, after decoding, before masking."""
        call = self._calls.get(flow)
        response = flow.response
        if call is None or response is None:
            return
        call.usage.update(from_headers(header_index.lookup(response.headers)))  # final figures
        if not (response.stream and response.status_code < 300):
            return
        if not is_event_stream(response.headers):
            return
        call.stream = StreamMeter(strip=call.strip)
        add_stage(response, "meter", call.stream)

    def response(self, flow: http.HTTPFlow) -> None:
        if websocket_open(flow):
            return
        call = self._calls.pop(flow)
        if call is None or self.sidebands.answered(flow, call):
            return
        if call.tasks is not None and flowstate.of(flow).get("timeout") != "first-byte":
            self._settle_tasks(flow, call, call.tasks)
            return
        self._read_buffered(flow, call)
        response = flow.response
        job = None
        if response is not None and call.lease == flow.id and not call.usage:
            job = jobs.created(call.provider, call.operation, response)
        if job is not None:
            # The job bills when it runs; its units come with its result: the reservation is
            # held for it (charged if nobody fetches it).
            flowstate.of(flow)["charged"] = "held"
            tasks.spawn(self._hold(call, job))
            return
        # keyrelay gave up waiting (a first-byte timeout): the provider may still finish and bill.
        gave_up = flowstate.of(flow).get("timeout") == "first-byte"
        self._settle(flow, call, cut=gave_up or _cut(call, ended=True))

    async def done(self) -> None:
        """Shutdown: calls still open (a drain's deadline passed) are settled as cut ones are,
        and their settlements awaited; a renewal loop ends (their leases would outlive us). Then
        the alerts those settlements raised are posted (within the webhook's bound)."""
        await self.sidebands.stop(SHUTDOWN_WAIT)  # each call hung up: no longer metered
        if self._renewing is not None:
            self._renewing.cancel()
        for flow, call in self._calls.items():
            if self.sessions.of(flow) is not None:
                await self.websocket_end(flow)  # type: ignore[arg-type]  # HTTP flows only
                continue
            self._calls.pop(flow)
            self._settle(flow, call, cut=True)  # type: ignore[arg-type]  # HTTP flows only
        await tasks.settled(SHUTDOWN_WAIT)
        if self.alerts is not None:  # now, while the log still prints: not after, in the background
            await self.alerts.close()

    def error(self, flow: http.HTTPFlow) -> None:
        """A flow that failed: one that never reached the upstream costs nothing; a stream cut
        before its final usage, what it can have used; any other call cut once sent (its client
        left), its whole reservation: mitmproxy closes the upstream connection with the client's,
        so the answer that would say its usage is never read, and the provider bills anyway."""
        call = self._calls.pop(flow)
        if call is not None and not self.sidebands.unanswered(flow, call):
            sent = call.stream is None and flow.response is None and _reached(flow.server_conn)
            self._settle(flow, call, cut=sent or _cut(call, ended=False))

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        """A metered session settles what it still holds; any other WebSocket as `error`."""
        call = self._calls.get(flow)
        if call is None:
            return
        writes = self.sessions.end(flow, call)
        if writes is None:
            self.error(flow)
            return
        self._calls.pop(flow)
        for write in writes:
            tasks.spawn(write())

    # -- settling -----------------------------------------------------------------------------

    def _read_buffered(self, flow: http.HTTPFlow, call: Call) -> None:
        response = flow.response
        if response is None or response.stream or call.stream is not None:
            return
        # A body that does not decode is left as sent (transport.decode_buffered): read its bytes
        # rather than raise in a closing hook; it names no usage.
        body = header_index.content(response) or b""
        if is_event_stream(response.headers):
            meter = call.stream = StreamMeter(strip=call.strip)
            passed = meter(body) + meter(b"")
            if call.strip:
                response.content = passed
            if response.status_code >= 300:
                call.stream = None  # no final usage owed
            return
        usage, model = from_body(body)
        call.usage.update(usage)
        call.model = model or call.model

    def _settle(self, flow: http.HTTPFlow, call: Call, *, cut: bool) -> None:
        if call.client_body is not None:
            # Saved flows and the log's bytes_in show what the client sent (and a recording
            # replays for it), as its answer is what the client got.
            flow.request.content = call.client_body
        usage = dict(call.usage)
        model = call.model
        if call.stream is not None:
            usage.update(call.stream.usage)
            model = call.stream.model or model
        provider = call.provider
        # The answer names the model it ran (a dated snapshot); the request, what was asked for.
        price = prices.price_for(provider.prices, model, call.endpoint) or prices.price_for(
            provider.prices, call.model, call.endpoint
        )
        cost = prices.cost(price, usage) if price else 0
        if price is None and usage:
            self._warn_unpriced(provider.name, model or call.endpoint)
        state = flowstate.of(flow)
        response = flow.response
        answered = response is not None and 200 <= response.status_code < 300
        # A cut stream, or an answer that should say its usage and does not: never under-counted.
        says_usage = call.operation is not None and call.operation.meter in _ANSWER_METERED
        bound = call.stream.cut_usage(CUT_MARGIN + call.hidden) if cut and call.stream else None
        if bound is not None and price is not None:
            # A stopped stream costs what it can have used, not its whole reservation (which
            # bounds it too: what it reserved is its worst case).
            estimate = prices.cost(price, bound)
            cost = max(cost, min(estimate, call.reserved) if call.reserved else estimate)
            state["charged"] = "estimate"
        elif (cut or (answered and says_usage and not usage)) and call.reserved > cost:
            cost = call.reserved
            state["charged"] = "reservation"
        if usage or price or call.reserved:
            state["usage"] = usage
            state["cost"] = prices.usd(cost)
            state["model"] = _label(model, call.endpoint, provider)
        if call.lease != flow.id and not answered:
            call.lease = None  # not a job's result yet: its job's lease stays
        if call.accounts:
            tasks.spawn(self._record(call, cost))

    async def _record(self, call: Call, spent: int) -> None:
        assert self.books is not None
        books, name = self.books, call.provider.name
        await retrying(lambda: books.settle(call.accounts, name, call.lease, spent))
        await self._alert(call, spent)

    async def _hold(self, call: Call, job: Lease) -> None:
        assert self.books is not None and call.lease is not None
        books, lease = self.books, call.lease
        await retrying(lambda: books.retain(call.accounts, lease, job))

    def _warn_unpriced(self, provider: str, model: str) -> None:
        if (provider, model) not in self._warned:
            self._warned.add((provider, model))
            logger.warning(
                "keyrelay: budget: no price for %s model %r: metered, costs 0", provider, model
            )

    def unavailable(self, e: StoreError, call: Call | None) -> Refusal | None:
        assert self.rules is not None
        on_error = self.rules.limits_backend.on_error
        if self._log(e.kind):
            logger.error("keyrelay: budget: the store failed (%s); failing %s", e, on_error)
        if on_error == "open" and call is not None:
            return None  # forwarded unreserved; its cost is still recorded if the store returns
        return Refusal(
            503,
            "budget-unavailable",
            "keyrelay cannot check budgets right now; try again shortly",
            headers=(("retry-after", "1"),),
        )


def _cut(call: Call, *, ended: bool) -> bool:
    """A stream that ended before the provider's final usage: charged its whole reservation.
    A stream the upstream ended with no usage at all is not a metered one (fal's status
    events); one whose head carried the usage (ElevenLabs, fal) had it from the start."""
    meter = call.stream
    if meter is None or meter.complete or call.usage:
        return False
    return not ended or bool(meter.usage)


def _reached(server: connection.Server) -> bool:
    """The request went out: the upstream connection was set up (TLS included)."""
    done = server.timestamp_tls_setup if server.tls else server.timestamp_tcp_setup
    return done is not None


def _tightest(account: Account) -> int | None:
    limits = [x for x in (account.limit, account.provider_limit) if x is not None]
    return min(limits) if limits else None


def _nano(usd: float | None) -> int | None:
    return None if usd is None else round(usd * prices.NANO)


def _chat(endpoint: str) -> bool:
    return endpoint.endswith(CHAT_COMPLETIONS[1:])


def _wants_usage(data: dict[str, Any]) -> bool:
    """A streamed chat completion whose client did not ask for its usage."""
    options = data.get("stream_options")
    if data.get("stream") is not True or not (options is None or isinstance(options, dict)):
        return False
    return not (options or {}).get("include_usage")


def _label(model: str | None, endpoint: str, provider: Provider) -> str:
    """The metrics' model label: the model, or for an endpoint price (fal) the endpoint id."""
    if model:
        return model[:100]
    if any(p.by_endpoint for p in provider.prices):
        return endpoint.partition("/requests/")[0][:100]
    return "-"
