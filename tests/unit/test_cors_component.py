"""Cors on flows: preflights answered, disallowed origins refused, keyrelay's policy on answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from addon import flowstate
from addon.config.rules import load
from addon.cors.component import Cors, decorate
from addon.problems import Refusal, Reply

RULES = """
defaults:
  cors: {origins: ["http://localhost:3000"]}
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential: {header: authorization, format: "Bearer {key}", key: {env: O}}
"""
ALLOWED = "http://localhost:3000"


@pytest.fixture
def cors(tmp_path: Path) -> Cors:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    component = Cors()
    component.rules = load(path, {})
    return component


def browser_flow(method: str = "POST", **headers: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = method
    flow.request.path = "/api/openai/chat/completions"
    flow.request.headers["host"] = "keyrelay.test:8080"
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


def test_without_rules_or_origin_nothing_is_answered_or_noted(cors: Cors) -> None:
    assert Cors().requestheaders(browser_flow(origin="https://evil.test")) is None
    flow = browser_flow()
    assert cors.requestheaders(flow) is None
    assert flowstate.of(flow) == {}


def test_a_preflight_from_an_allowed_origin_is_answered(cors: Cors) -> None:
    flow = browser_flow(
        "OPTIONS",
        origin=ALLOWED,
        access_control_request_method="POST",
        access_control_request_headers="content-type, x-unlisted",
    )
    answer = cors.requestheaders(flow)
    assert isinstance(answer, Reply)
    assert (answer.status, answer.decision) == (204, "preflight")
    headers = dict(answer.headers)
    assert headers["access-control-allow-origin"] == ALLOWED
    assert headers["access-control-allow-headers"] == "content-type"


@pytest.mark.parametrize("origin", ["https://evil.test", "http://[", "null"])
def test_a_preflight_from_another_or_a_malformed_origin_is_refused(cors: Cors, origin: str) -> None:
    flow = browser_flow("OPTIONS", origin=origin, access_control_request_method="POST")
    answer = cors.requestheaders(flow)
    assert isinstance(answer, Refusal)
    assert (answer.status, answer.reason) == (403, "origin-not-allowed")


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.test"},
        {"origin": "http://["},
        {"sec_fetch_site": "cross-site"},  # a form post: the browser sent no Origin
        {"origin": ALLOWED.replace("3000", "3001"), "sec_fetch_site": "same-site"},
    ],
)
def test_a_browser_request_from_elsewhere_is_refused(cors: Cors, headers: dict[str, str]) -> None:
    answer = cors.requestheaders(browser_flow(**headers))
    assert isinstance(answer, Refusal)
    assert (answer.status, answer.reason) == (403, "origin-not-allowed")


def test_a_page_on_keyrelays_own_origin_may_post(cors: Cors) -> None:
    flow = browser_flow(origin="http://keyrelay.test:8080")
    assert cors.requestheaders(flow) is None
    assert "cors" not in flowstate.of(flow)


def test_the_upstream_policy_is_replaced_by_keyrelays(cors: Cors) -> None:
    flow = browser_flow(origin=ALLOWED, sec_fetch_site="cross-site")
    assert cors.requestheaders(flow) is None
    flow.response = http.Response.make(
        200,
        b"{}",
        {
            "access-control-allow-origin": "*",
            "Access-Control-Allow-Credentials": "true",
            "vary": "Accept-Encoding",
        },
    )
    cors.responseheaders(flow)
    headers = flow.response.headers
    assert headers.get_all("access-control-allow-origin") == [ALLOWED]
    assert "access-control-allow-credentials" not in headers
    assert "retry-after" in headers["access-control-expose-headers"]
    assert headers.get_all("vary") == ["Accept-Encoding, Origin"]


def test_decorate_strips_upstream_cors_headers_even_without_an_origin() -> None:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["Access-Control-Allow-Origin"] = "*"
    flow.response.headers["access-control-expose-headers"] = "x-secret"
    decorate(flow)
    assert not any(
        name.lower().startswith(b"access-control-") for name, _ in flow.response.headers.fields
    )
    assert flow.response.headers["header-response"] == "svalue"
    assert "vary" not in flow.response.headers


def test_decorate_keeps_a_wildcard_vary_and_skips_flows_without_a_response() -> None:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flowstate.of(flow)["cors"] = [["access-control-allow-origin", ALLOWED]]
    flow.response.headers["vary"] = "*"
    decorate(flow)
    assert flow.response.headers["access-control-allow-origin"] == ALLOWED
    assert flow.response.headers.get_all("vary") == ["*"]
    decorate(tflow.tflow())  # no response yet: nothing to do, nothing raised


def test_a_preflight_answer_is_left_as_keyrelay_made_it(cors: Cors) -> None:
    flow = browser_flow("OPTIONS", origin=ALLOWED, access_control_request_method="POST")
    answer = cors.requestheaders(flow)
    assert isinstance(answer, Reply)
    flow.response = http.Response.make(204, b"", dict(answer.headers))
    flowstate.of(flow)["decision"] = "preflight"
    cors.responseheaders(flow)
    assert (
        flow.response.headers["access-control-allow-methods"]
        == dict(answer.headers)["access-control-allow-methods"]
    )
