"""Metered WebSocket sessions (an operation with `meter: session`: OpenAI Realtime).

A session holds one response's worst case in reserve from its open (`ready`), so a response can
always start covered. When one starts (the client's `response.create`, forwarded only once
covered, or the server's `response.created` for one it started itself: voice activity), the
reserve becomes that response's, and the next response's is reserved at once; when that cannot
be had, the response running is the session's last. Each `response.done` settles its response
at the usage it reports. When no response can be covered, keyrelay answers the client's
`response.create` with the protocol's `error` event instead of forwarding it and closes the
socket (4402), and likewise ends a session whose `session.update` names a model the rules
forbid or that has no price (1008).

Every reservation is a lease of its own (`<flow id>#n`), renewed while the session lasts. At the
end, a response still running (its usage never read) is charged its whole reservation, and the
unused reserve is released.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from mitmproxy import flow as mitmflow
from mitmproxy import http

from addon import flowstate
from addon.budget import live_sessions, tts_sessions
from addon.budget.books import LEASE_SECONDS, BudgetStore, Lease
from addon.budget.calls import Call, retrying
from addon.budget.session_state import Glue, Held, Session, Writes
from addon.budget.session_state import unpriced as _unpriced_what
from addon.flowlocal import FlowLocal
from addon.guard import body_rules
from addon.metering import prices, realtime
from addon.problems import Refusal
from addon.ratelimit.backend import StoreError
from addon.transport import websocket_close

logger = logging.getLogger(__name__)

# What a store failure means for a session (the budget's on_error): a refusal, or None (go on
# unreserved).
OnStoreError = Callable[[StoreError, Call], Refusal | None]


@dataclass
class Settled:
    """What a `response.done` did to its session."""

    reservation: bool  # it reported no usage: charged its whole reservation
    exhausted: bool = False  # no further response can be covered: the session ends


def model_of(query: str) -> str | None:
    named = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "model"]
    return named[0] if len(named) == 1 else None


class Sessions:
    """The flow glue: open, each message, the end."""

    def __init__(
        self, books: Callable[[], BudgetStore | None], on_store_error: OnStoreError
    ) -> None:
        self._books = books
        self._on_store_error = on_store_error
        self._sessions: FlowLocal[Session] = FlowLocal("budget.sessions")
        # The other protocols' sessions (config/operations.py's SessionProtocol), through Core.
        self._protocols: dict[str, Glue] = {
            "elevenlabs-stream-input": tts_sessions.TtsSessions(self),
            "gemini-live": live_sessions.LiveSessions(self),
        }

    def of(self, flow: mitmflow.Flow) -> Session | None:
        return self._sessions.get(flow)

    def keep(self, flow: http.HTTPFlow, session: Session) -> None:
        """A session kept with its flow (a WebRTC call's: held on its offer until the answer,
        budget/sideband.py; the other protocols' sessions: budget/session_state.py's Core)."""
        self._sessions.set(flow, session)

    def take(self, flow: http.HTTPFlow) -> Session | None:
        return self._sessions.pop(flow)

    # -- open ---------------------------------------------------------------------------------

    async def open(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None:
        """The handshake: the model priced, the first response's worst case reserved."""
        provider, operation = call.provider, call.operation
        assert operation is not None
        if other := self._protocols.get(operation.protocol):
            return await other.open(flow, call, limited)
        query = flow.request.path.partition("?")[2]
        model = model_of(query)
        if limited and ("intent", "transcription") in parse_qsl(query):
            why = "a transcription session is billed by its transcriptions, unmetered"
            return _unpriced_what(provider.name, why)
        if model is None:
            rules = provider.validation
            if not limited and rules.models is None and rules.max_tokens is None:
                return None  # nothing to meter or hold it to (a call's sideband, say)
            return Refusal(
                403,
                "model-required",
                "a metered session's URL must name its model (?model=): its price and the "
                "rules depend on it",
            )
        opened = await self.begin(call, flow.id, model, limited)
        if isinstance(opened, Refusal):
            return opened
        self._sessions.set(flow, opened)
        return None

    async def begin(
        self, call: Call, ident: str, model: str, limited: bool, cap: int | None = None
    ) -> Session | Refusal:
        """A session priced and, under a budget, its first response reserved: a WebSocket's,
        or a WebRTC call's (budget/sideband.py). `cap`: the output cap its responses are
        reserved at, when not the rules' (a call's browser sets its own)."""
        provider, operation = call.provider, call.operation
        assert operation is not None
        price = prices.price_for(provider.prices, model, call.endpoint)
        if price is not None and not price.covers(operation.meter):
            price = None  # it matched, with no rate for tokens
        if price is None and limited:
            return _unpriced(provider.name, model)
        context = int(operation.reserve or realtime.CONTEXT_TOKENS)
        if cap is None:
            cap = realtime.output_cap(None, provider.validation.max_tokens)
        session = Session(ident, model, price, cap, context, limited)
        call.model = model
        if limited:
            refusal = await self._hold(call, session)
            if refusal is None and session.ready is None:
                refusal = refusal_to_open(session)
            if refusal is not None:
                return refusal
        return session

    async def _hold(self, call: Call, session: Session) -> Refusal | None:
        """Reserve the next response's worst case as `ready`; a refusal when the store failed
        and the rules fail closed."""
        held = await self.reserve(call, session, session.worst())
        if isinstance(held, Refusal):
            return held
        if held is not None:
            session.ready = held
        return None

    async def reserve(self, call: Call, session: Session, amount: int) -> Held | Refusal | None:
        """`amount` reserved under a lease of its own; None when the budget cannot cover it."""
        books = self._books()
        if books is None or not session.limited:
            return (session.next_lease(), 0)
        lease = session.next_lease()
        try:
            blocked = await books.reserve(
                call.accounts, call.provider.name, amount, Lease(lease, LEASE_SECONDS)
            )
        except StoreError as e:
            refusal = self._on_store_error(e, call)
            return (lease, 0) if refusal is None else refusal  # unreserved, as a call goes on
        return None if blocked else (lease, amount)

    # -- messages -----------------------------------------------------------------------------

    async def message(self, flow: http.HTTPFlow, call: Call) -> None:
        session = self._sessions.get(flow)
        if session is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        assert call.operation is not None
        if other := self._protocols.get(call.operation.protocol):
            await other.message(flow, call, session, message)
        elif message.from_client:
            await self._from_client(flow, call, session, message)
        elif not message.injected:
            await self._from_server(flow, call, session, message)

    async def _from_client(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None:
        if session.ended:
            message.drop()
            return
        event = realtime.event_of(message.content) if message.is_text else None
        if event is None:
            # The provider reads JSON text events only: what keyrelay cannot read does not go on.
            message.drop()
            websocket_close.say(flow, _unreadable().event("keyrelay_unreadable"))
            return
        kind = event["type"]
        if kind == "session.update":
            changed = await self._session_update(flow, call, session, event)
        elif kind == "response.create":
            changed = await self._response_create(flow, call, session, event)
        else:
            return
        if session.ended:
            message.drop()
        elif changed:
            message.content = json.dumps(event).encode()

    async def _session_update(
        self, flow: http.HTTPFlow, call: Call, session: Session, event: dict[str, Any]
    ) -> bool:
        """A new model is held to the rules and priced; the output cap is lowered to what the
        reservations assume; a dearer worst case is reserved before it goes on."""
        config = event.get("session")
        if not isinstance(config, dict):
            return False
        provider = call.provider
        if session.limited and realtime.transcribes(config):
            why = "input audio transcription is billed apart from responses, unmetered"
            self._end(flow, session, _from_refusal(_unpriced_what(provider.name, why)))
            return False
        model, price = session.model, session.price
        if "model" in config:
            asked = config["model"]
            if refusal := body_rules.check_model(provider.validation, {"model": asked}):
                self._end(flow, session, _from_refusal(refusal, realtime.POLICY_CLOSE))
                return False
            found = prices.price_for(provider.prices, asked, call.endpoint)
            if session.limited and (found is None or not found.covers("session")):
                self._end(flow, session, _from_refusal(_unpriced(provider.name, asked)))
                return False
            model, price = asked, found
        cap, changed = session.cap, False
        if any(f in config for f in realtime.CAP_FIELDS):
            cap = realtime.output_cap(realtime.asked_cap(config), provider.validation.max_tokens)
            for name in realtime.CAP_FIELDS:
                if name in config:
                    changed = changed or config[name] != cap
                    config[name] = cap
        before = (session.model, session.price, session.cap)
        session.model, session.price, session.cap = model, price, cap
        held = session.ready
        if held is not None and held[1] and session.worst() > held[1]:
            session.ready = None
            await self._hold(call, session)
            if session.ready is None or not session.ready[1]:
                session.ready = held  # the old reserve stays for the old settings
                session.model, session.price, session.cap = before
                self._end(flow, session, exhausted())
                return False
            await self._settle(call, held, 0)
        call.model = model
        return changed

    async def _response_create(
        self, flow: http.HTTPFlow, call: Call, session: Session, event: dict[str, Any]
    ) -> bool:
        """Forwarded only when covered; its own output cap is held to the session's."""
        changed = False
        config = event.get("response")
        if config is None:
            config = event["response"] = {}
            changed = True
        if isinstance(config, dict):
            asked = realtime.asked_cap(config)
            cap = min(realtime.output_cap(asked, call.provider.validation.max_tokens), session.cap)
            if not any(f in config for f in realtime.CAP_FIELDS):
                # Explicit, so the cap holds even before the session's own has reached the
                # provider.
                config[realtime.CAP_FIELDS[0] if session.ga else realtime.CAP_FIELDS[1]] = cap
                changed = True
            for name in realtime.CAP_FIELDS:
                if name in config:
                    changed = changed or config[name] != cap
                    config[name] = cap
        held = await self._start(call, session)
        if held is None:
            self._end(flow, session, exhausted())
            return False
        session.creating.append(held)
        return changed

    async def _start(self, call: Call, session: Session) -> Held | None:
        """A response starts: it takes the reserve, and the next one is reserved (or the
        reserve stays empty: this one is the last that can run). None: none was held."""
        held = session.ready
        if held is None:
            await self._hold(call, session)  # settlements since may have made room
            held = session.ready
            if held is None:
                return None
        session.ready = None
        await self._hold(call, session)
        return held

    async def _from_server(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None:
        event = realtime.server_event(message.content) if message.is_text else None
        if event is None:
            return
        kind = event["type"]
        response = event.get("response")
        rid = response.get("id") if isinstance(response, dict) else None
        if kind == "session.created":
            self._cap_session(flow, session, event.get("session"))
        elif kind == "response.created" and isinstance(rid, str):
            held = session.creating.popleft() if session.creating else None
            if held is None:  # started by the server (voice activity): nothing asked for it
                held = await self._start(call, session)
                if held is None:
                    # It runs uncovered: charged its worst case, and the session ends now.
                    held = ("", session.worst())
                    self._end(flow, session, exhausted())
            session.running[rid] = held
        elif kind == "response.done":
            await self._done(flow, call, session, event, rid)

    def _cap_session(self, flow: http.HTTPFlow, session: Session, config: Any) -> None:
        """The provider's default output cap may be above what a response reserves: keyrelay
        sets the session's own (the client then sees one `session.updated` it did not ask for)."""
        if not isinstance(config, dict):
            return
        session.ga = "type" in config  # the GA interface names the session's type; the beta not
        asked = realtime.asked_cap(config)
        if type(asked) is int and 0 < asked <= session.cap:
            return
        update: dict[str, Any] = {"max_response_output_tokens": session.cap}
        if session.ga:
            update = {"type": config["type"], "max_output_tokens": session.cap}
        event = {"type": "session.update", "event_id": "keyrelay_cap", "session": update}
        websocket_close.say(flow, json.dumps(event).encode(), upstream=True)

    async def _done(
        self, flow: http.HTTPFlow, call: Call, session: Session, event: dict[str, Any], rid: Any
    ) -> None:
        settled = await self.settle_response(call, session, event, rid)
        if settled is None:
            return
        if settled.reservation:
            flowstate.of(flow)["charged"] = "reservation"
        if settled.exhausted:
            self._end(flow, session, exhausted())

    async def settle_response(
        self, call: Call, session: Session, event: dict[str, Any], rid: Any
    ) -> Settled | None:
        """A `response.done`: its response settled at the usage it reports (its reservation
        when it reports none), and the next response's reserve taken again if it was not. None:
        not a response keyrelay saw start."""
        held = session.running.pop(rid, None) if isinstance(rid, str) else None
        if held is None:
            if not session.creating:
                return None  # not a response keyrelay saw start (a reply to its own update)
            held = session.creating.popleft()
        usage = realtime.usage_of(event)
        cost = held[1] if usage is None else session.cost_of(usage)
        session.add(usage or {}, cost)
        await self._settle(call, held, cost)
        settled = Settled(reservation=usage is None)
        if session.ready is None and not session.ended:
            await self._hold(call, session)  # what this one did not use is free again
            settled.exhausted = (
                session.ready is None and not session.running and not session.creating
            )
        return settled

    async def _settle(self, call: Call, held: Held, cost: int) -> None:
        books = self._books()
        if books is None or not call.accounts:
            return
        lease = held[0] or None
        await retrying(lambda: books.settle(call.accounts, call.provider.name, lease, cost))

    def _end(self, flow: http.HTTPFlow, session: Session, refused: realtime.Refused) -> None:
        message = refused.event("keyrelay_" + refused.code)
        self.close(flow, session, message, refused.close, refused.message)

    # -- Core: what the other protocols' sessions take on the books (budget/session_state.py) -

    def drop(self, flow: http.HTTPFlow) -> None:
        self._sessions.pop(flow)

    start = _start  # a response starts (also one seen on a call's sideband: budget/sideband.py)
    settle = _settle

    def close(
        self, flow: http.HTTPFlow, session: Session, message: bytes, code: int, reason: str
    ) -> None:
        if session.ended:
            return  # its close is on its way
        session.ended = True
        logger.info("keyrelay: session ended: %s", reason)
        websocket_close.say_and_close(flow, message, code, reason)

    # -- the end ------------------------------------------------------------------------------

    def end(self, flow: http.HTTPFlow, call: Call) -> Writes | None:
        """websocket_end (or shutdown): responses still running charged their reservations,
        the reserve released; the session's figures into the flow's state. Returns the
        settlements to run; None for a flow that is no session."""
        websocket_close.forget(flow)
        session = self._sessions.pop(flow)
        if session is None:
            return None
        charged, writes = self.release(call, session)
        state = flowstate.of(flow)
        if charged:
            state["charged"] = "reservation"
        state["usage"] = dict(session.usage)
        state["cost"] = prices.usd(session.cost)
        state["model"] = session.model[:100]
        return writes

    def release(self, call: Call, session: Session) -> tuple[int, Writes]:
        """A session's end, flow-free: responses still running charged their reservations
        (returned: nano-dollars), the reserve released; the settlements to run."""
        unread = [*session.creating, *session.running.values()]
        charged = sum(amount for _, amount in unread)
        session.cost += charged
        held = [(h, h[1]) for h in unread]
        if session.ready is not None:
            held.append((session.ready, 0))
        session.creating.clear()
        session.running.clear()
        session.ready = None
        writes: Writes = [functools.partial(self._settle, call, h, cost) for h, cost in held]
        return charged, writes


def refusal_to_open(session: Session) -> Refusal:
    return Refusal(
        429,
        "budget-exhausted",
        f"the budget cannot cover a session's first response (up to "
        f"${prices.usd(session.worst())}); it resets with its period",
    )


def exhausted() -> realtime.Refused:
    return realtime.Refused(
        "budget-exhausted",
        "the budget cannot cover another response: the session ends",
        realtime.BUDGET_CLOSE,
    )


def _unreadable() -> realtime.Refused:
    return realtime.Refused(
        "invalid-event", "keyrelay reads a session's events as JSON text", realtime.POLICY_CLOSE
    )


def _unpriced(provider: str, model: str) -> Refusal:
    return _unpriced_what(provider, f"a session with {model[:100]!r} has no price in rules.yaml")


def _from_refusal(refusal: Refusal, close: int = realtime.POLICY_CLOSE) -> realtime.Refused:
    return realtime.Refused(refusal.reason, refusal.detail, close)
