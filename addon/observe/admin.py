"""keyrelay's own endpoints: `/_keyrelay/health`, `/_keyrelay/metrics`, and the probes
`/_keyrelay/live` (the process answers) and `/_keyrelay/ready` (it can serve: see `ready`).

Who may read them is the top-level `admin:` section (addon/config/admin.py). Neither ever
shows a key. Pure: the component in admin_endpoints.py wires this to flows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from addon import client_address
from addon.config.admin import Admin, bearer_is
from addon.observe import metrics
from addon.problems import Refusal
from addon.routing.server_names import is_loopback

PREFIX = "/_keyrelay/"
HEALTH = PREFIX + "health"
METRICS = PREFIX + "metrics"
USAGE = PREFIX + "usage"  # each caller's spend: served by addon/budget/, not behind admin:
LIVE = PREFIX + "live"
READY = PREFIX + "ready"
PROBES = (LIVE, READY)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def is_admin_path(path: str) -> bool:
    return path.partition("?")[0].startswith(PREFIX)


def serve(
    admin: Admin,
    admin_token: str | None,
    method: str,
    path: str,
    peer_ip: str,
    authorization: str | None,
    providers: Callable[[], Mapping[str, bool]],
) -> Answer | Refusal:
    """Answer a request under /_keyrelay/. `providers` maps each provider to whether its key is
    set; it is called only for an allowed health request."""
    if not _allowed(admin, admin_token, peer_ip, authorization):
        return Refusal(403, "admin-forbidden", "keyrelay's endpoints are not open to this client")
    route = path.partition("?")[0]
    if route not in (HEALTH, METRICS):
        return Refusal(404, "no-route", "no keyrelay endpoint at this path")
    if method not in ("GET", "HEAD"):
        return Refusal(405, "method-not-allowed", "use GET", headers=(("allow", "GET, HEAD"),))
    if route == METRICS:
        return Answer(200, metrics.exposition(), metrics.CONTENT_TYPE)
    configured = providers()
    body = {
        "status": "ok",
        "providers": {name: {"configured": ok} for name, ok in configured.items()},
    }
    return Answer(200, json.dumps(body).encode(), "application/json")


def probe_refusal(
    admin: Admin, admin_token: str | None, peer_ip: str, authorization: str | None
) -> Refusal | None:
    """The probes are open to what the health endpoint is open to, and to `admin.probes`'
    networks (which may read nothing else)."""
    if client_address.trusts(peer_ip, admin.probes):
        return None
    if _allowed(admin, admin_token, peer_ip, authorization):
        return None
    return Refusal(403, "admin-forbidden", "keyrelay's endpoints are not open to this client")


LIVE_ANSWER = Answer(200, b'{"status": "live"}', "application/json")


def readiness(checks: Mapping[str, bool]) -> Answer:
    """200 when every check holds, else 503; each check by name."""
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not-ready", "checks": dict(checks)}
    return Answer(200 if ready else 503, json.dumps(body).encode(), "application/json")


def _allowed(admin: Admin, token: str | None, peer_ip: str, authorization: str | None) -> bool:
    if admin.loopback and is_loopback(peer_ip):
        return True
    return bearer_is(token, authorization)
