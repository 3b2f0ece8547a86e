"""The start-up summary: one log block, at start and after each reload, saying what the rules put
in effect: per provider the auth mode, CORS origins, limits and budget; the backend the limits
and budgets are kept in; the top-level budget and its alerts; who may read the admin endpoints.

Never a secret: a secret is named by where it comes from (`$NAME`, a file), a Redis URL and a
webhook URL by scheme, host and port only (either may hold a password or a token).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from addon.config.alerts import TopBudget
from addon.config.budget import BudgetSpec
from addon.config.cors import CorsPolicy
from addon.config.limits import BackendSpec, LimitSpec
from addon.config.provider import Provider
from addon.config.rules import Rules


def summary(rules: Rules) -> str:
    lines = [
        f"keyrelay: in effect from {rules.source}:",
        f"  limits and budgets kept in: {_backend(rules.limits_backend)}",
        f"  budget per identity: {_budget(rules.budget) or 'none'}{_alerts(rules.budget)}",
        f"  admin endpoints: {_admin(rules)}",
    ]
    if rules.trusted_proxies:
        lines.append(f"  trusted proxies: {', '.join(map(str, rules.trusted_proxies))}")
    lines += [f"  {_provider(p)}" for p in rules.providers]
    return "\n".join(lines)


def _provider(p: Provider) -> str:
    route = f"prefix {p.prefix}" if p.prefix else f"header {p.target_header or p.target_query}"
    parts = [
        f"auth {_auth(p)}",
        f"cors {_cors(p.cors)}",
        f"limits {_limits(p.limits)}",
        f"budget {_budget(p.budget) or 'none'}",
    ]
    if p.prices:
        parts.append(f"{len(p.prices)} price(s)")
    return f"{p.name} ({route}): " + "; ".join(parts)


def _auth(p: Provider) -> str:
    auth = p.auth
    detail = ""
    if auth.tokens is not None:
        detail = f" from {auth.tokens.describe()}"
    elif auth.jwt is not None:
        detail = f" ({'/'.join(auth.jwt.algorithms)}, issuer {auth.jwt.issuer})"
    elif auth.forward is not None:
        detail = f" to {_origin(auth.forward.url)}"
    allow = f", only {len(auth.allow)} identities" if auth.allow is not None else ""
    return f"{auth.mode}{detail}{allow}"


def _cors(policy: CorsPolicy) -> str:
    if not policy.origins:
        return "none"
    origins = [
        f"{o.scheme}://{o.host}" + ("" if o.port in (80, 443) else f":{o.port}")
        for o in policy.origins
    ]
    return ", ".join(origins) + (" (credentials)" if policy.credentials else "")


def _limits(spec: LimitSpec) -> str:
    parts = [f"{w.amount} per {w.seconds}s" for w in spec.windows]
    if spec.concurrent:
        parts.append(f"{spec.concurrent} at once")
    if spec.endpoints:
        parts.append(f"{len(spec.endpoints)} endpoint rule(s)")
    return ", ".join(parts) or "none"


def _budget(spec: BudgetSpec) -> str:
    parts = []
    if spec.daily is not None:
        parts.append(f"${spec.daily:.2f} a day")
    if spec.monthly is not None:
        parts.append(f"${spec.monthly:.2f} a month")
    return ", ".join(parts)


def _alerts(spec: TopBudget) -> str:
    alerts = spec.alerts
    if alerts is None:
        return ""
    parts = []
    if alerts.thresholds:
        parts.append("at " + "/".join(map(str, alerts.thresholds)) + "%")
    if alerts.rate is not None:
        parts.append(f"at {alerts.rate.times:g}x the hour's pace over {alerts.rate.window}s")
    target = f"posted to {_origin(alerts.webhook.url)}" if alerts.webhook else "logged only"
    return f"; alerts {', '.join(parts)}, {target}"


def _backend(spec: BackendSpec) -> str:
    if spec.redis is None:
        return "memory (this process only)"
    return f"Redis {_origin(spec.redis)} (prefix {spec.prefix}, on error {spec.on_error})"


def _admin(rules: Rules) -> str:
    admin = rules.admin
    who = ["loopback"] if admin.loopback else []
    if admin.token is not None:
        who.append(f"a token from {' or '.join('$' + name for name in admin.token.names)}")
    if admin.probes:
        who.append(f"probes from {', '.join(map(str, admin.probes))}")
    return ", ".join(who) or "nobody"


def _origin(url: str) -> str:
    """scheme://host:port of a URL: never its user, password, path or query."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{port}"
