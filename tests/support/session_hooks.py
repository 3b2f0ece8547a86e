"""Driving a metered WebSocket session's hooks in process (the budget's requestheaders, request
and websocket_message), without sockets: the shared part of tests/unit's session hook tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import http, websocket
from mitmproxy.test import taddons, tflow
from wsproto.frame_protocol import Opcode

from addon.budget.component import Budget
from addon.caller import Caller
from addon.config.rules import load
from addon.resources import Resources
from addon.routing.router import Route, Router

ALICE = Caller("token:alice")


def handshake(
    rules_file: Path, env: dict[str, str], path: str
) -> tuple[Budget, Route, http.HTTPFlow]:
    """A budget installed with these rules, and a WebSocket handshake to `path`, routed."""
    loaded = load(rules_file, env)
    budget = Budget()
    with Resources().reload() as resources:
        install = budget.prepare(loaded, resources)
    install()
    flow = tflow.twebsocketflow()
    flow.websocket, flow.response = None, None  # the handshake first
    flow.request.method, flow.request.path = "GET", path
    flow.request.headers.clear()
    flow.request.headers.update(upgrade="websocket", connection="Upgrade")
    route = Router(loaded).route("GET", flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route), route
    return budget, route, flow


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


async def held(budget: Budget) -> tuple[int, int]:
    """(spent, reserved) in alice's day, with the first provider."""
    assert budget.books is not None and budget.rules is not None
    provider = budget.rules.providers[0]
    accounts = budget.accounts(ALICE.identity, provider, datetime.now(UTC))
    fields = (await budget.books.read((accounts[0].key,)))[0]
    return fields.get("spent", 0), fields.get("reserved", 0)


async def send(budget: Budget, flow: http.HTTPFlow, event: dict[str, Any], *, client: bool) -> Any:
    """One message through the budget's websocket_message hook; the message, as passed on."""
    assert flow.websocket is not None
    message = websocket.WebSocketMessage(Opcode.TEXT, client, json.dumps(event).encode())
    flow.websocket.messages.append(message)
    await budget.websocket_message(flow)
    return message


async def opened(budget: Budget, route: Route, flow: http.HTTPFlow) -> None:
    """The handshake through the budget, answered 101: the session is open."""
    assert budget.requestheaders(flow, route, ALICE) is None
    assert await budget.request(flow) is None
    flow.response = http.Response.make(101)
    flow.websocket = websocket.WebSocketData()
