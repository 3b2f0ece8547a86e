"""Gemini Live sessions (`BidiGenerateContent`), metered from their `usageMetadata`
(metering/live.py), as OpenAI Realtime's are from `response.done` (budget/sessions.py).

The model is in the client's first message, `setup`: it is held to `models:` and priced there
(none goes on before it), its output cap lowered to the rules' `max_tokens` and written into
the setup, and the first turn's worst case (the cap made, the whole context read: `reserve`
input tokens, at the dearest rates) reserved. Before a turn the client asks for
(`clientContent` with `turnComplete`) goes on, it takes that reserve and the next turn's is
reserved; a turn the server starts itself (voice activity, after a tool's result) does the
same when its first message passes. Each turn settles at its usage (the last it reports,
after `turnComplete` if it comes later). When no turn can be covered, the client's message is
not forwarded: keyrelay sends Gemini's `goAway` and closes both sides with 4402. A second
`setup`, or a first message that is none, ends the session with 1008.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from addon.budget.calls import Call
from addon.budget.session_state import Core, Session, unpriced
from addon.guard import body_rules
from addon.metering import live, prices, realtime
from addon.problems import Refusal

CURRENT = "turn"  # the running turn's key in Session.running; a finished one awaiting usage: done#n


class LiveSessions:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def open(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None:
        provider, operation = call.provider, call.operation
        assert operation is not None
        rules = provider.validation
        held = rules.models is not None or rules.max_tokens is not None
        if not (limited or provider.prices or held):
            return None  # nothing to meter or hold it to: its messages pass as any WebSocket's
        context = int(operation.reserve or realtime.CONTEXT_TOKENS)
        session = Session(flow.id, "", None, live.MAX_OUTPUT, context, limited)
        self._core.keep(flow, session)  # its model, price and first reserve come with its setup
        return None

    async def message(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None:
        if message.from_client:
            if session.ended or not await self._from_client(flow, call, session, message):
                message.drop()
        elif not message.injected:
            await self._from_server(flow, call, session, message.content)

    async def _from_client(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> bool:
        """Whether the message goes on."""
        data = live.message_of(message.content)
        setup = data.get("setup") if data is not None else None
        if not session.model:
            if not isinstance(setup, dict):
                why = "a Live session's first message is its setup, as JSON"
                return self._end(flow, session, "invalid-message", why)
            if await self._setup(flow, call, session, setup):
                message.content = json.dumps(data).encode()  # its output cap
                return True
            return False
        if data is None:
            if not session.limited:
                return True  # nothing depends on it: no budget holds on a turn's start
            return self._end(flow, session, "invalid-message", "keyrelay reads messages as JSON")
        if setup is not None:
            return self._end(flow, session, "invalid-message", "a session is set up once")
        if live.asks_turn(data):
            held = await self._core.start(call, session)
            if held is None:
                return self._exhausted(flow, session)
            session.creating.append(held)
        return True

    async def _setup(
        self, flow: http.HTTPFlow, call: Call, session: Session, setup: dict[str, Any]
    ) -> bool:
        """The model held to the rules and priced, the cap set, the first turn reserved."""
        provider = call.provider
        model = live.model_of(setup)
        if model is None:
            return self._end(flow, session, "model-required", "the setup must name its model")
        if refusal := body_rules.check_model(provider.validation, {"model": model}):
            return self._end(flow, session, refusal.reason, refusal.detail)
        price = prices.price_for(provider.prices, model, call.endpoint)
        if price is not None and not price.covers("session"):
            price = None  # it matched, with no rate for tokens
        if price is None and session.limited:
            refusal = unpriced(provider.name, f"a session with {model[:100]!r} has no price")
            return self._end(flow, session, refusal.reason, refusal.detail)
        session.model, session.price = model, price
        session.cap = live.cap_setup(setup, provider.validation.max_tokens)
        call.model = model
        held = await self._core.reserve(call, session, session.worst())
        if isinstance(held, Refusal):
            return self._end(flow, session, held.reason, held.detail)
        if held is None:
            return self._exhausted(flow, session)
        session.ready = held
        return True

    async def _from_server(
        self, flow: http.HTTPFlow, call: Call, session: Session, content: bytes
    ) -> None:
        running = CURRENT in session.running
        if running and not any(marker in content for marker in live.MARKERS):
            return  # the running turn's media
        data = live.message_of(content)
        if data is None:
            return
        if not running and live.in_turn(data):
            await self._turn_starts(flow, call, session)
        usage = live.usage_of(data)
        if usage is not None:
            await self._usage(call, session, usage)
        if live.turn_complete(data) and CURRENT in session.running:
            held = session.running.pop(CURRENT)
            if session.latest is None:
                session.running[f"done#{session.leases_made}"] = held  # its usage comes later
            else:
                usage, session.latest = session.latest, None
                await self._settle(flow, call, session, held, usage)

    async def _turn_starts(self, flow: http.HTTPFlow, call: Call, session: Session) -> None:
        held = session.creating.popleft() if session.creating else None
        if held is None:  # started by the server: nothing asked for it
            held = await self._core.start(call, session)
            if held is None:
                # It runs uncovered: charged its worst case, and the session ends now.
                held = ("", session.worst())
                self._exhausted(flow, session)
        session.running[CURRENT] = held
        session.latest = None

    async def _usage(self, call: Call, session: Session, usage: Any) -> None:
        """A report: the running turn's latest (the dearest kept, never the lower), or the bill
        of the oldest finished turn still awaiting one, or of work no turn holds (charged)."""
        if CURRENT in session.running:
            if session.latest is None or session.cost_of(usage) >= session.cost_of(session.latest):
                session.latest = usage
            return
        done = next((k for k in session.running if k.startswith("done#")), None)
        held = session.running.pop(done) if done else ("", 0)
        await self._settle(None, call, session, held, usage)

    async def _settle(
        self, flow: http.HTTPFlow | None, call: Call, session: Session, held: Any, usage: Any
    ) -> None:
        cost = session.cost_of(usage)
        session.add(usage, cost)
        await self._core.settle(call, held, cost)
        if flow is None or session.ready is not None or session.ended:
            return
        # What this turn did not use is free again: the next turn's reserve.
        again = await self._core.reserve(call, session, session.worst())
        if isinstance(again, tuple):
            session.ready = again
        elif not session.running and not session.creating:
            self._exhausted(flow, session)

    def _exhausted(self, flow: http.HTTPFlow, session: Session) -> bool:
        why = "the budget cannot cover another turn: the session ends"
        return self._end(flow, session, "budget-exhausted", why, realtime.BUDGET_CLOSE)

    def _end(
        self,
        flow: http.HTTPFlow,
        session: Session,
        code: str,
        why: str,
        close: int = realtime.POLICY_CLOSE,
    ) -> bool:
        """End the session with Gemini's `goAway`, then the close (its reason says why);
        False, so the message that caused it does not go on."""
        self._core.close(flow, session, live.GO_AWAY, close, f"{code}: {why}")
        return False
