"""fal's token endpoint cannot mint a token for an app outside the endpoint allowlist."""

from __future__ import annotations

import json

import pytest

from addon.config.model import ConfigError, read
from addon.config.provider import EndpointAllowlist as Endpoints
from addon.guard.token_grants import applies, check

ENDPOINTS = Endpoints(allow=("fal-ai/flux/dev",), methods=frozenset({"POST"}), hosts=frozenset())
JSON = ["application/json"]


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("POST", "rest.fal.ai/tokens/", True),
        ("POST", "rest.fal.ai/tokens", True),
        ("PUT", "rest.fal.ai//Tokens/?x=1", True),  # read as the same URL by lenient servers
        ("POST", "rest.alpha.fal.ai/tokens/", True),
        ("GET", "rest.fal.ai/tokens/", False),
        ("POST", "rest.fal.ai/tokens/abc", False),
        ("POST", "fal.run/fal-ai/flux/dev", False),
    ],
)
def test_token_urls(method: str, url: str, expected: bool) -> None:
    host, _, path = url.partition("/")
    assert applies(ENDPOINTS, method, host, "/" + path) is expected
    # Without an endpoint allowlist the token's lifetime is still capped: the same URLs count.
    assert applies(None, method, host, "/" + path) is expected


@pytest.mark.parametrize(
    ("grant", "allowed"),
    [
        ({"allowed_apps": ["flux"], "token_expiration": 120}, True),  # what @fal-ai/client sends
        ({"allowed_apps": ["fal-ai/flux", "fal-ai/flux/dev"], "token_expiration": 300}, True),
        ({"allowed_apps": ["fal-ai/veo3"], "token_expiration": 120}, False),
        ({"allowed_apps": ["flux", "veo3"], "token_expiration": 120}, False),
        ({"allowed_apps": [], "token_expiration": 120}, False),
        ({"allowed_apps": "flux", "token_expiration": 120}, False),
        ({"token_expiration": 120}, False),
        ({"allowed_apps": ["flux"], "token_expiration": 301}, False),
        ({"allowed_apps": ["flux"]}, False),
        ({"allowed_apps": ["flux"], "token_expiration": "120"}, False),
    ],
)
def test_token_grants(grant: dict[str, object], allowed: bool) -> None:
    refusal = check(ENDPOINTS, JSON, json.dumps(grant).encode())
    assert (refusal is None) is allowed
    if refusal:
        assert (refusal.status, refusal.reason) == (403, "token-not-allowed")
        assert refusal.detail.startswith("rule endpoints:")


@pytest.mark.parametrize(
    ("grant", "allowed"),
    [
        ({"allowed_apps": ["any-owner/any-app"], "token_expiration": 300}, True),
        # The review's find: a year-long token, with the default rules (no endpoints:).
        ({"allowed_apps": ["any-owner/any-app"], "token_expiration": 31536000}, False),
        ({"allowed_apps": ["any-owner/any-app"]}, False),
        ({"allowed_apps": [7], "token_expiration": 60}, False),
    ],
)
def test_token_lifetime_is_capped_without_endpoints(
    grant: dict[str, object], allowed: bool
) -> None:
    refusal = check(None, JSON, json.dumps(grant).encode())
    assert (refusal is None) is allowed


def test_token_grant_bodies_must_be_plain_json() -> None:
    grant = b'{"allowed_apps": ["flux"], "token_expiration": 120}'
    assert check(ENDPOINTS, ["text/plain"], grant).status == 415  # type: ignore[union-attr]
    twice = b'{"allowed_apps": ["flux"], "allowed_apps": ["veo3"], "token_expiration": 1}'
    assert check(ENDPOINTS, JSON, twice).reason == "duplicate-field"  # type: ignore[union-attr]


def test_endpoints_token_options() -> None:
    raw = {"allow": ["a/b"], "max_token_seconds": 60, "token_urls": ["x.ai/t/"]}
    endpoints = read(Endpoints, raw, "r.yaml", "endpoints")
    assert (endpoints.max_token_seconds, endpoints.token_urls) == (60, ("x.ai/t/",))
    assert endpoints.apps == frozenset({"a/b"})
    with pytest.raises(ConfigError, match=r"endpoints.max_token_seconds: must be at least 1"):
        read(Endpoints, {"allow": ["a/b"], "max_token_seconds": 0}, "r.yaml", "endpoints")
    with pytest.raises(ConfigError, match=r"endpoints.allow\[0\]: an endpoint id looks like"):
        read(Endpoints, {"allow": ["/a/b"]}, "r.yaml", "endpoints")
