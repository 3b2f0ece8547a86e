"""ElevenLabs text-to-speech sessions (`stream-input`), metered by the characters the client
sends (metering/tts_socket.py).

At the open, the model (`?model_id=`) is held to `models:` and priced by its `characters:`
rate, and `reserve` characters (1 unless configured) are held until the end: a budget with
nothing left refuses the handshake. Each client message is charged before it goes on: its
characters reserved, then settled at once (ElevenLabs bills what it is sent). A message the
budget cannot cover is not forwarded: the client gets ElevenLabs' error shape
(`{"message", "error", "code"}`) and the socket closes with 4402.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from mitmproxy import http

from addon.budget.calls import Call
from addon.budget.session_state import Core, Session, cannot_open, unpriced
from addon.metering import prices, realtime, tts_socket
from addon.metering.usage import CHARACTERS
from addon.problems import Refusal


class TtsSessions:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def open(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None:
        provider, operation = call.provider, call.operation
        assert operation is not None
        query = flow.request.path.partition("?")[2]
        named = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "model_id"]
        if len(named) > 1:
            return Refusal(400, "duplicate-field", "the query names a model twice")
        model = named[0] if named else None
        if model is None and provider.validation.models is not None:
            return Refusal(
                403,
                "model-required",
                "rule models: a text-to-speech session's URL must name its model (?model_id=)",
            )
        price = prices.price_for(provider.prices, model, call.endpoint)
        if price is not None and not price.covers("characters"):
            price = None  # it matched, with no rate for characters
        if price is None and not limited:
            return None  # nothing to meter: its messages pass as any WebSocket's
        if price is None:
            what = f"text to speech with {model[:100]!r}" if model else "text to speech"
            return unpriced(provider.name, f"{what} has no characters price in rules.yaml")
        session = Session(flow.id, model or "", price, cap=0, context=0, limited=limited)
        call.model = model
        if not limited:
            self._core.keep(flow, session)
            return None
        amount = _cost(session, math.ceil(operation.reserve or 1))
        held = await self._core.reserve(call, session, amount)
        if held is None:
            return cannot_open("message", amount)
        if isinstance(held, Refusal):
            return held
        session.ready = held  # released at the end
        self._core.keep(flow, session)
        return None

    async def message(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None:
        if not message.from_client:
            return
        if session.ended:
            message.drop()
            return
        data = tts_socket.message_of(message.content) if message.is_text else None
        if data is None and not session.limited:
            return  # counted where it can be: a budget holds nothing on it
        if data is None:
            # What keyrelay cannot read, it cannot price: under a budget it does not go on.
            message.drop()
            why = "keyrelay reads a text-to-speech session's messages as JSON with a text string"
            self._close(flow, session, "invalid-message", why, realtime.POLICY_CLOSE)
            return
        if tts_socket.without_credentials(data):
            message.content = json.dumps(data).encode()
        n = tts_socket.characters(data)
        if not n:
            return
        cost = _cost(session, n)
        held = await self._core.reserve(call, session, cost)
        if held is None or isinstance(held, Refusal):
            message.drop()
            if held is None:
                why = f"the budget cannot cover {n} more characters: the session ends"
                self._close(flow, session, "budget-exhausted", why, realtime.BUDGET_CLOSE)
            else:
                self._close(flow, session, held.reason, held.detail, realtime.POLICY_CLOSE)
            return
        session.add({CHARACTERS: n}, cost)
        await self._core.settle(call, held, cost)

    def _close(
        self, flow: http.HTTPFlow, session: Session, code: str, why: str, close: int
    ) -> None:
        self._core.close(flow, session, tts_socket.error(code, why, close), close, why)


def _cost(session: Session, characters: int) -> int:
    return prices.cost(session.price, {CHARACTERS: characters}) if session.price else 0
