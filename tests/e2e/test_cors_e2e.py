"""CORS through the real mitmdump: preflights answered before authentication, actual responses
and refusals carrying keyrelay's headers (never the upstream's), disallowed origins refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from support import cors
from support.client import HttpClient, Reply
from support.cors import ALLOWED
from support.proxy import KeyrelayProcess
from support.upstream import UpstreamServer, json_response

TOKEN = "browser-app-token-1"


def cors_rules() -> str:
    """The repo's rules with localhost:3000 allowed (as the README says) and a token required
    for anthropic, to show preflights come before authentication."""
    text = cors.allowing()
    auth = "    auth:\n      mode: tokens\n      tokens: {env: KEYRELAY_TEST_TOKENS}\n\n  openai:\n"
    assert "\n  openai:\n" in text
    return text.replace("\n  openai:\n", "\n" + auth, 1)


@pytest.fixture
def kr(keyrelay_factory: Callable[..., KeyrelayProcess]) -> KeyrelayProcess:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return keyrelay_factory(cors_rules(), env={"KEYRELAY_TEST_TOKENS": f"app:{digest}"})


def cors_headers(reply: Reply) -> dict[str, str]:
    return cors.cors_headers(reply.headers)


def preflight(c: HttpClient, path: str, origin: str, method: str, names: str) -> Reply:
    return c.request(
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": names,
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-site",
        },
    )


def test_preflight_is_answered_before_authentication(
    kr: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    with HttpClient(kr.port) as c:
        reply = preflight(
            c, "/api/anthropic/v1/messages", ALLOWED, "POST", "anthropic-version,content-type"
        )
        assert reply.status == 204, reply.body
        got = cors_headers(reply)
        assert got["access-control-allow-origin"] == ALLOWED
        assert got["access-control-allow-headers"] == "anthropic-version, content-type"
        assert "POST" in got["access-control-allow-methods"]
        assert int(got["access-control-max-age"]) > 0
        # The actual request without a token: a 401 problem the page can read.
        refused = c.post(
            "/api/anthropic/v1/messages",
            json={"model": "m"},
            headers={"Origin": ALLOWED, "Sec-Fetch-Site": "same-site"},
        )
        assert refused.status == 401, refused.body
        assert cors_headers(refused)["access-control-allow-origin"] == ALLOWED
        assert "Origin" in (refused.header("vary") or "")
    assert upstream.requests == []


def test_preflight_for_a_header_routed_provider_on_any_path(kr: KeyrelayProcess) -> None:
    with HttpClient(kr.port) as c:
        reply = preflight(c, "/my/own/path", ALLOWED, "PUT", "content-type,x-fal-target-url")
    assert reply.status == 204
    got = cors_headers(reply)
    assert got["access-control-allow-methods"] == "DELETE, GET, POST, PUT"  # fal's methods
    assert got["access-control-allow-headers"] == "content-type, x-fal-target-url"


def test_disallowed_origin_preflight_is_a_403_problem(
    kr: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    mark = kr.mark()
    with HttpClient(kr.port) as c:
        reply = preflight(c, "/api/openai/chat/completions", "http://evil.test", "POST", "x")
        assert reply.status == 403
        # Attributed to the provider it was for, in the access log and the metrics.
        kr.wait_for_output(r" openai OPTIONS \S+ 403 .* reason=origin-not-allowed", since=mark)
        metrics = c.get("/_keyrelay/metrics").text
    assert 'keyrelay_requests_total{provider="openai",status="403"} 1.0' in metrics
    assert reply.json()["type"].endswith("/origin-not-allowed")
    assert cors_headers(reply) == {}
    assert upstream.requests == []


def test_actual_response_carries_keyrelays_cors_not_the_upstreams(
    kr: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route(
        "POST",
        "/apps/run",
        json_response(
            {"data": {"id": "t1", "status": 1}},
            headers=[
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Headers", "*"),
                ("Access-Control-Expose-Headers", "x-secret-internal"),
                ("Vary", "Accept-Encoding"),
            ],
        ),
    )
    with HttpClient(kr.port) as c:
        reply = c.post(
            "/api/inference/proxy",
            json={"app": "a"},
            headers={
                "Origin": ALLOWED,
                "Sec-Fetch-Site": "same-site",
                "x-inf-target-url": "https://api.inference.sh/apps/run",
            },
        )
    assert reply.status == 200
    got = cors_headers(reply)
    assert got["access-control-allow-origin"] == ALLOWED
    assert got["access-control-allow-credentials"] == "true"  # inference: credentials include
    assert "access-control-allow-headers" not in got
    exposed = got["access-control-expose-headers"].split(", ")
    assert "x-secret-internal" not in exposed and "request-id" in exposed
    assert reply.header_all("access-control-allow-origin") == [ALLOWED]
    assert [v.strip() for v in (reply.header("vary") or "").split(",")] == [
        "Accept-Encoding",
        "Origin",
    ]
    # The browser's Origin is not forwarded upstream.
    assert upstream.only_request().header("origin") is None


def test_refusal_to_an_allowed_origin_carries_cors(kr: KeyrelayProcess) -> None:
    with HttpClient(kr.port) as c:
        reply = c.post(
            "/api/fal/proxy",
            json={},
            headers={"Origin": ALLOWED, "x-fal-target-url": "https://evil.test/x"},
        )
    assert reply.status == 412
    got = cors_headers(reply)
    assert got["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in got  # fal: no credentials configured


def test_disallowed_origin_gets_no_cors_headers(
    kr: KeyrelayProcess, upstream: UpstreamServer
) -> None:
    upstream.route(None, "/", json_response({}, headers=[("Access-Control-Allow-Origin", "*")]))
    with HttpClient(kr.port) as c:
        # A browser without Sec-Fetch-* (older Safari) from another origin: refused too.
        plain = c.post(
            "/api/openai/chat/completions", json={}, headers={"Origin": "http://evil.test"}
        )
        assert plain.status == 403
        assert cors_headers(plain) == {}
        # Not a browser at all (no Origin, no Sec-Fetch-Site): forwarded, and the upstream's
        # own CORS header is still dropped.
        sdk = c.post("/api/openai/chat/completions", json={})
        assert sdk.status == 200
        assert cors_headers(sdk) == {}
        # A browser's simple cross-site request (no preflight): refused before it costs anything.
        simple = c.post(
            "/api/openai/chat/completions",
            b"{}",
            headers={
                "Origin": "http://evil.test",
                "Sec-Fetch-Site": "cross-site",
                "Content-Type": "text/plain",
            },
        )
        assert simple.status == 403
        assert cors_headers(simple) == {}
    assert len(upstream.requests) == 1
