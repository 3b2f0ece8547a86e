"""`GET /_keyrelay/usage`: the caller's own books, authenticated as a provider call would be.

An admin token may name any identity (`?identity=`), or list the identities that spent most in
the period (`?top=N`, `&period=monthly` for the month); without a credential that some provider
accepts the answer is that provider's 401. What the JSON holds is report.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mitmproxy import http

from addon import header_index, peer
from addon.auth.gate import Gate
from addon.auth.identity import Identity, anonymous
from addon.budget.books import account_key, periods
from addon.budget.component import Budget
from addon.budget.report import ranking, report
from addon.config.admin import bearer_is
from addon.config.rules import Rules
from addon.problems import Answer, Refusal, Reply
from addon.ratelimit.backend import StoreError

MAX_TOP = 1000


async def usage(budget: Budget, flow: http.HTTPFlow, gates: Mapping[str, Gate]) -> Answer:
    rules, request = budget.rules, flow.request
    if rules is None:
        return Refusal(503, "not-ready", "keyrelay has no rules loaded")
    if request.method not in ("GET", "HEAD"):
        return Refusal(405, "method-not-allowed", "use GET", headers=(("allow", "GET, HEAD"),))
    asked, top = request.query.get("identity"), request.query.get("top")
    if asked is not None or top is not None:
        token = rules.admin.token_value(rules.env)
        if not bearer_is(token, request.headers.get("authorization")):
            return Refusal(403, "admin-forbidden", "only the admin token may name identities")
        if top is not None:
            return await _top(budget, top, request.query.get("period", "daily"))
        identity = asked or ""
    else:
        who = await _caller(flow, rules, gates)
        if isinstance(who, Refusal):
            return who
        identity = str(who)
    now = datetime.now(UTC)
    current = periods(now)
    keys = tuple(account_key(identity, p) for p in current)
    try:
        books = await budget.books.read(keys) if budget.books else [{}, {}]
    except StoreError as e:
        return budget.unavailable(e, None) or Refusal(503, "budget-unavailable", "try again")
    budgets = {p.name: p.budget for p in rules.providers}
    return _json(report(identity, rules.budget, budgets, current, books, now))


async def _top(budget: Budget, top: str, period_name: str) -> Answer:
    """The identities that spent most in the current day (or month), most first."""
    if not top.isdigit() or not 1 <= int(top) <= MAX_TOP:
        return Refusal(400, "invalid-query", f"top must be a whole number from 1 to {MAX_TOP}")
    chosen = [p for p in periods(datetime.now(UTC)) if p.name == period_name]
    if not chosen:
        return Refusal(400, "invalid-query", "period must be daily or monthly")
    try:
        ranked = await budget.books.top(chosen[0].ident, int(top)) if budget.books else []
    except StoreError as e:
        return budget.unavailable(e, None) or Refusal(503, "budget-unavailable", "try again")
    return _json(ranking(chosen[0], ranked))


def _json(body: dict[str, Any]) -> Reply:
    headers = (("content-type", "application/json"), ("cache-control", "no-store"))
    return Reply(200, "admin", json.dumps(body).encode(), headers)


async def _caller(
    flow: http.HTTPFlow, rules: Rules, gates: Mapping[str, Gate]
) -> Identity | Refusal:
    """The first provider whose authentication accepts the credential; an open provider's
    anonymous identity (the address) when none does and one is open."""
    request = flow.request
    header = header_index.lookup(request.headers)
    ip = peer.address(flow)
    refusal: Refusal | None = None
    open_provider = False
    for provider in rules.providers:
        gate = gates.get(provider.name)
        if gate is None or provider.auth.mode == "none":
            open_provider = open_provider or provider.auth.mode == "none"
            continue
        result = await gate.authenticate(request.method, request.path, header, ip)
        if not isinstance(result, Refusal):
            return result
        refusal = refusal or result
    if open_provider:
        return anonymous(ip)
    return refusal or Refusal(401, "unauthenticated", "keyrelay needs a valid credential")
