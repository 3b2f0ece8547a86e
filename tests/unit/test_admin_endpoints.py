"""AdminEndpoints on flows: /_keyrelay/ answered before routing, to the right clients only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow
from support.repo import RULES

from addon.config.rules import Rules, load
from addon.keys.store import KeyStore
from addon.observe.admin_endpoints import AdminEndpoints
from addon.problems import Answer, Refusal, Reply

ADMIN_TOKEN = "admin-token-0123456789"


USAGE_REPLY = Reply(200, "admin", b"{}")


async def usage(flow: http.HTTPFlow) -> Answer:
    flow.metadata["asked-for-usage"] = True
    return USAGE_REPLY


class Endpoints(AdminEndpoints):
    """Called from sync tests: each call runs on its own event loop."""

    def requestheaders(self, flow: http.HTTPFlow) -> Any:  # type: ignore[override]
        return asyncio.run(super().requestheaders(flow))


def endpoints(rules: Rules | None, keys: KeyStore | None = None) -> Endpoints:
    return Endpoints(lambda: (rules, keys), usage)


def test_usage_is_each_callers_own_not_behind_the_admin_section() -> None:
    """/_keyrelay/usage goes to the budget component (authenticated there), even from a
    client the admin section refuses."""
    flow = get("/_keyrelay/usage?identity=x", peer="203.0.113.9")
    assert endpoints(load(RULES, {})).requestheaders(flow) is USAGE_REPLY
    assert flow.metadata["asked-for-usage"]


def get(path: str, peer: str = "127.0.0.1", method: str = "GET", **headers: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.peername = (peer, 50000)
    flow.request.method, flow.request.path = method, path
    flow.request.headers.update(headers)
    return flow


def test_other_paths_and_an_unconfigured_relay_are_not_answered() -> None:
    rules = load(RULES, {})
    assert endpoints(rules).requestheaders(get("/api/openai/v1/models")) is None
    assert endpoints(rules).requestheaders(get("/_keyrelayx/health")) is None
    assert endpoints(None).requestheaders(get("/_keyrelay/health")) is None


def test_health_tells_loopback_clients_which_providers_have_a_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"  # away from a developer's .env
    path.write_text(RULES.read_text())
    rules = load(path, {"OPENAI_API_KEY": "sk-openai-000000"})
    answer = endpoints(rules, KeyStore(rules)).requestheaders(get("/_keyrelay/health?x=1"))
    assert isinstance(answer, Reply)
    assert (answer.status, answer.decision) == (200, "admin")
    assert dict(answer.headers) == {"content-type": "application/json"}
    providers = json.loads(answer.body)["providers"]
    assert providers["openai"] == {"configured": True}
    assert providers["anthropic"] == {"configured": False}
    assert b"sk-openai" not in answer.body


def test_health_without_a_key_store_says_nothing_is_configured() -> None:
    answer = endpoints(load(RULES, {})).requestheaders(get("/_keyrelay/health"))
    assert isinstance(answer, Reply)
    assert not any(p["configured"] for p in json.loads(answer.body)["providers"].values())


def test_metrics_are_served_as_prometheus_text() -> None:
    answer = endpoints(load(RULES, {})).requestheaders(get("/_keyrelay/metrics"))
    assert isinstance(answer, Reply) and answer.status == 200
    assert dict(answer.headers)["content-type"].startswith("text/plain")


def test_other_clients_need_the_admin_token(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.read_text() + "\nadmin:\n  loopback: false\n  token: {env: ADMIN}\n")
    admin = endpoints(load(path, {"ADMIN": ADMIN_TOKEN}))
    for flow in (
        get("/_keyrelay/health", "10.0.0.7"),
        get("/_keyrelay/health", "127.0.0.1"),  # loopback: false
        get("/_keyrelay/health", "10.0.0.7", authorization="Bearer admin-token-wrong"),
    ):
        refusal = admin.requestheaders(flow)
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.reason) == (403, "admin-forbidden")
    flow = get("/_keyrelay/health", "10.0.0.7", authorization=f"Bearer {ADMIN_TOKEN}")
    assert isinstance(admin.requestheaders(flow), Reply)


def test_unknown_endpoints_and_methods_are_refused() -> None:
    admin = endpoints(load(RULES, {}))
    missing = admin.requestheaders(get("/_keyrelay/keys"))
    assert isinstance(missing, Refusal) and missing.status == 404
    post = admin.requestheaders(get("/_keyrelay/health", method="POST"))
    assert isinstance(post, Refusal) and post.status == 405
    assert dict(post.headers)["allow"] == "GET, HEAD"
