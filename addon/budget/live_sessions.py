"""Gemini Live sessions (placeholder)."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from addon.budget.calls import Call
from addon.budget.session_state import Core, Session
from addon.problems import Refusal


class LiveSessions:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def open(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None:
        return Refusal(403, "websocket-unmetered", "not yet")

    async def message(
        self, flow: http.HTTPFlow, call: Call, session: Session, message: Any
    ) -> None:
        return None
