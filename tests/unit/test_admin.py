"""/_keyrelay/health and /_keyrelay/metrics: access rules, content, Prometheus format."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from addon.config.admin import Admin
from addon.config.model import ConfigError, read
from addon.observe import admin as endpoints
from addon.observe import metrics
from addon.observe.admin import Answer
from addon.problems import Refusal

PROVIDERS = {"openai": True, "fal": False}


def serve(path: str, ip: str = "127.0.0.1", auth: str | None = None, **kw: object) -> object:
    admin = kw.get("admin", Admin())
    token = kw.get("token")
    method = str(kw.get("method", "GET"))
    return endpoints.serve(admin, token, method, path, ip, auth, lambda: PROVIDERS)  # type: ignore[arg-type]


def test_health_lists_providers_for_loopback_clients() -> None:
    answer = serve("/_keyrelay/health?x=1", ip="::1")
    assert isinstance(answer, Answer) and answer.status == 200
    assert json.loads(answer.body) == {
        "status": "ok",
        "providers": {"openai": {"configured": True}, "fal": {"configured": False}},
    }


@pytest.mark.parametrize("ip", ["10.0.0.5", "::ffff:192.168.1.2", "not-an-ip"])
def test_other_clients_are_refused_without_the_token(ip: str) -> None:
    refusal = serve("/_keyrelay/health", ip=ip)
    assert isinstance(refusal, Refusal) and refusal.status == 403


def test_the_token_opens_them_to_any_client() -> None:
    admin = Admin(loopback=False)
    assert isinstance(
        serve("/_keyrelay/metrics", ip="127.0.0.1", admin=admin, token="t0ken-abc"), Refusal
    )
    ok = serve("/_keyrelay/metrics", "10.0.0.5", "Bearer t0ken-abc", admin=admin, token="t0ken-abc")
    assert isinstance(ok, Answer) and ok.content_type.startswith("text/plain")
    wrong = serve("/_keyrelay/metrics", "10.0.0.5", "Bearer nope", admin=admin, token="t0ken-abc")
    assert isinstance(wrong, Refusal) and wrong.status == 403


def test_unknown_paths_and_methods() -> None:
    missing = serve("/_keyrelay/keys")
    assert isinstance(missing, Refusal) and missing.status == 404
    post = serve("/_keyrelay/health", method="POST")
    assert isinstance(post, Refusal) and post.status == 405


def test_metrics_parse_with_the_prometheus_parser() -> None:
    metrics.request_done("openai", 200)
    metrics.refused("no-route")
    metrics.upstream_timing("openai", 0.3, 0.1)
    metrics.body_bytes("openai", 10, 20)
    metrics.stream_opened("openai")
    metrics.rate_limited("openai")
    answer = serve("/_keyrelay/metrics")
    assert isinstance(answer, Answer)
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    expected = {
        "keyrelay_requests",
        "keyrelay_refusals",
        "keyrelay_upstream_duration_seconds",
        "keyrelay_upstream_ttfb_seconds",
        "keyrelay_body_bytes",
        "keyrelay_open_streams",
        "keyrelay_rate_limited",
    }
    assert expected <= set(families)
    limited = [s for s in families["keyrelay_rate_limited"].samples if s.name.endswith("_total")]
    assert limited and limited[0].labels == {"provider": "openai"} and limited[0].value >= 1
    assert families["keyrelay_upstream_duration_seconds"].type == "histogram"
    metrics.stream_closed("openai")


def test_reading_the_admin_section() -> None:
    def parse(raw: dict[str, object]) -> Admin:
        return read(Admin, raw, "rules.yaml", "admin")

    admin = parse({"loopback": False, "token": {"env": "ADMIN_TOKEN"}, "probes": "10.0.0.0/8"})
    assert not admin.loopback and admin.token_value({"ADMIN_TOKEN": "abc"}) == "abc"
    assert [str(n) for n in admin.probes] == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"rules.yaml: admin.token.env: must name"):
        parse({"token": {"env": "not a name"}})
    with pytest.raises(ConfigError, match=r"admin.public: unknown key"):
        parse({"public": True})
    with pytest.raises(ConfigError, match=r"admin.probes\[1\]: is not an address or a network"):
        parse({"probes": ["::1", "nope"]})
