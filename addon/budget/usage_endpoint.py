"""`GET /_keyrelay/usage`: the caller's own books, authenticated as a provider call would be.

An admin token may name any identity (`?identity=`); without a credential that some provider
accepts the answer is that provider's 401. What the JSON holds is report.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from mitmproxy import http

from addon import header_index
from addon.auth.gate import Gate
from addon.auth.identity import Identity, anonymous
from addon.budget.books import account_key, periods
from addon.budget.component import Budget
from addon.budget.report import report
from addon.config.admin import bearer_is
from addon.config.rules import Rules
from addon.problems import Answer, Refusal, Reply
from addon.ratelimit.backend import StoreError


async def usage(budget: Budget, flow: http.HTTPFlow, gates: Mapping[str, Gate]) -> Answer:
    rules, request = budget.rules, flow.request
    if rules is None:
        return Refusal(503, "not-ready", "keyrelay has no rules loaded")
    if request.method not in ("GET", "HEAD"):
        return Refusal(405, "method-not-allowed", "use GET", headers=(("allow", "GET, HEAD"),))
    asked = request.query.get("identity")
    if asked is not None:
        token = rules.admin.token_value(rules.env)
        if not bearer_is(token, request.headers.get("authorization")):
            return Refusal(403, "admin-forbidden", "only the admin token may name an identity")
        identity = asked
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
    body = report(identity, rules.budget, budgets, current, books, now)
    headers = (("content-type", "application/json"), ("cache-control", "no-store"))
    return Reply(200, "admin", json.dumps(body).encode(), headers)


async def _caller(
    flow: http.HTTPFlow, rules: Rules, gates: Mapping[str, Gate]
) -> Identity | Refusal:
    """The first provider whose authentication accepts the credential; an open provider's
    anonymous identity (the address) when none does and one is open."""
    request = flow.request
    header = header_index.lookup(request.headers)
    peer = flow.client_conn.peername
    ip = str(peer[0]) if peer else "unknown"
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
