"""cors.py: origins, the policy per provider, preflight answers and response headers (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.repo import RULES as REPO_RULES

from addon.config.cors import CorsPolicy, parse_origin
from addon.config.model import ConfigError
from addon.config.rules import Rules, load
from addon.cors import answers as cors
from addon.problems import Refusal

RULES = """
defaults:
  cors:
    origins: [http://localhost:3000, "https://*.example.com"]
providers:
  anthropic:
    match: {prefix: /api/anthropic}
    upstream: https://api.anthropic.com
    credential: {header: x-api-key, key: {env: A}}
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential: {header: authorization, key: {env: O}}
    cors:
      origins: [https://only-openai.test]
      max_age: 60
  fal:
    match: {header: x-fal-target-url, paths: [/api/fal/proxy]}
    allow: ["* fal.run/**"]
    methods: [GET, POST, PUT, DELETE]
    credential: {header: authorization, key: {env: F}}
  inference:
    match: {header: x-inf-target-url, query: __inf_target}
    allow: ["* api.inference.sh/**"]
    methods: [GET, POST]
    credential: {header: authorization, key: {env: I}}
    cors:
      credentials: true
      allow_headers: [x-my-header, x-team-*]
"""


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load(path, {})


def headers(**values: str) -> cors.Header:
    table = {k.replace("_", "-"): v for k, v in values.items()}
    return table.get


def as_dict(pairs: cors.HeaderPairs) -> dict[str, str]:
    return dict(pairs)


@pytest.mark.parametrize(
    ("allowed", "origin", "ok"),
    [
        ("http://localhost:3000", "http://localhost:3000", True),
        ("http://localhost:3000", "http://LOCALHOST:3000", True),
        ("http://localhost:3000", "http://localhost:3001", False),
        ("http://localhost:3000", "https://localhost:3000", False),
        ("https://app.test", "https://app.test:443", True),
        ("https://*.example.com", "https://app.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://evilexample.com", False),
        ("https://*.example.com", "https://app.example.com.evil.test", False),
        ("https://*.example.com", "http://app.example.com", False),
        ("https://*.example.com", "https://app.example.com:8443", False),
        ("http://localhost:3000", "null", False),
        ("http://localhost:3000", "", False),
    ],
)
def test_origin_matching(allowed: str, origin: str, ok: bool) -> None:
    policy = CorsPolicy(origins=(parse_origin(allowed, pattern=True),))
    assert policy.allows(origin) is ok


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("*", "every website"),
        ("localhost:3000", "looks like"),
        ("http://localhost:3000/app", "no path"),
        ("https://a.*.example.com", "leftmost"),
        ("https://*example.com", "leftmost"),
        ("ftp://files.test", "looks like"),
        ("http://user@host.test", "user information"),
    ],
)
def test_bad_origins_name_file_key_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace('"https://*.example.com"', f'"{text}"'))
    with pytest.raises(ConfigError) as e:
        load(path, {})
    assert e.value.key == "defaults.cors.origins[1]"
    assert reason in e.value.reason
    assert str(path) in str(e.value)


def test_unknown_cors_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("max_age: 60", "max_age: 60\n      origin: x"))
    with pytest.raises(ConfigError) as e:
        load(path, {})
    assert e.value.key == "providers.openai.cors.origin"


def test_default_rules_allow_no_origin() -> None:
    rules = load(REPO_RULES, {})
    for policy in (rules.cors, *(p.cors for p in rules.providers)):
        assert not policy.allows("http://localhost:3000")
    inference = next(p for p in rules.providers if p.name == "inference")
    assert inference.cors.credentials


def test_provider_section_inherits_what_it_leaves_out(rules: Rules) -> None:
    by_name = {p.name: p.cors for p in rules.providers}
    assert by_name["anthropic"] == rules.cors
    assert by_name["inference"].allows("http://localhost:3000")  # origins from defaults
    assert by_name["inference"].credentials and not rules.cors.credentials
    assert not by_name["openai"].allows("http://localhost:3000")  # its own list replaces
    assert by_name["openai"].allows("https://only-openai.test")
    assert by_name["openai"].max_age == 60


@pytest.mark.parametrize(
    ("path", "request_headers", "provider"),
    [
        ("/api/anthropic/v1/messages", "content-type,anthropic-version", "anthropic"),
        ("/api/openai/chat/completions", "authorization", "openai"),
        ("/api/fal/proxy", "content-type", "fal"),  # fal's path, no target named
        ("/any/where", "content-type,x-fal-target-url", "fal"),  # target header named
        ("/api/anthropic/v1/x", "X-Fal-Target-Url", "fal"),  # header routing wins, as in routing
        ("/p?__inf_target=https%3A%2F%2Fapi.inference.sh%2Ftasks%2F1%2Fstream", "", "inference"),
        ("/unknown", "content-type", None),
    ],
)
def test_preflight_finds_the_provider_without_a_target(
    rules: Rules, path: str, request_headers: str, provider: str | None
) -> None:
    found = cors.provider_for(rules, path, headers(access_control_request_headers=request_headers))
    assert (found.name if found else None) == provider


def test_preflight_allowed(rules: Rules) -> None:
    answer = cors.preflight(
        rules,
        "/api/fal/proxy",
        headers(
            origin="http://localhost:3000",
            access_control_request_method="POST",
            access_control_request_headers="content-type,x-fal-queue-priority,x-fal-target-url,x-evil",
        ),
    )
    assert isinstance(answer, cors.PreflightAnswer)
    assert answer.status == 204
    got = as_dict(answer.headers)
    assert got["access-control-allow-origin"] == "http://localhost:3000"
    assert got["access-control-allow-methods"] == "DELETE, GET, POST, PUT"
    assert got["access-control-allow-headers"] == (
        "content-type, x-fal-queue-priority, x-fal-target-url"
    )
    assert got["access-control-max-age"] == "600"
    assert "Origin" in got["vary"]
    assert "access-control-allow-credentials" not in got


def test_preflight_covers_the_anthropic_browser_sdk(rules: Rules) -> None:
    sent = (
        "anthropic-dangerous-direct-browser-access,anthropic-version,content-type,x-stainless-arch,"
        "x-stainless-lang,x-stainless-os,x-stainless-package-version,x-stainless-retry-count,"
        "x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout"
    )
    answer = cors.preflight(
        rules,
        "/api/anthropic/v1/messages",
        headers(
            origin="https://app.example.com",
            access_control_request_method="POST",
            access_control_request_headers=sent,
        ),
    )
    assert isinstance(answer, cors.PreflightAnswer)
    assert as_dict(answer.headers)["access-control-allow-headers"] == sent.replace(",", ", ")


def test_preflight_covers_the_gemini_browser_sdk(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + "  gemini: {profile: gemini}\n")
    sent = "content-type,user-agent,x-goog-api-client,x-goog-api-key,x-server-timeout"
    answer = cors.preflight(
        load(path, {}),
        "/api/gemini/v1/models/gemini-2.5-flash:streamGenerateContent",
        headers(
            origin="http://localhost:3000",
            access_control_request_method="POST",
            access_control_request_headers=sent,
        ),
    )
    assert isinstance(answer, cors.PreflightAnswer)
    assert as_dict(answer.headers)["access-control-allow-headers"] == sent.replace(",", ", ")


def test_preflight_credentials_and_extra_headers(rules: Rules) -> None:
    answer = cors.preflight(
        rules,
        "/x",
        headers(
            origin="http://localhost:3000",
            access_control_request_method="GET",
            access_control_request_headers="x-inf-target-url,x-my-header,x-team-a,x-other",
            access_control_request_private_network="true",
        ),
    )
    assert isinstance(answer, cors.PreflightAnswer)
    got = as_dict(answer.headers)
    assert got["access-control-allow-credentials"] == "true"
    assert got["access-control-allow-headers"] == "x-inf-target-url, x-my-header, x-team-a"
    assert got["access-control-allow-methods"] == "GET, POST"
    assert got["access-control-allow-private-network"] == "true"


def test_preflight_disallowed_origin_is_a_403_problem(rules: Rules) -> None:
    answer = cors.preflight(
        rules,
        "/api/openai/chat/completions",
        headers(origin="http://localhost:3000", access_control_request_method="POST"),
    )
    assert isinstance(answer, Refusal)
    assert (answer.status, answer.reason) == (403, "origin-not-allowed")
    assert "openai" in answer.detail and answer.headers == ()


def test_unknown_path_uses_the_global_policy(rules: Rules) -> None:
    ok = cors.preflight(
        rules,
        "/nowhere",
        headers(origin="https://x.example.com", access_control_request_method="GET"),
    )
    assert isinstance(ok, cors.PreflightAnswer)
    assert (
        as_dict(ok.headers)["access-control-allow-methods"] == "DELETE, GET, HEAD, PATCH, POST, PUT"
    )
    no = cors.preflight(
        rules, "/nowhere", headers(origin="https://x.test", access_control_request_method="GET")
    )
    assert isinstance(no, Refusal)


def test_is_preflight() -> None:
    assert cors.is_preflight("OPTIONS", headers(origin="o", access_control_request_method="GET"))
    assert not cors.is_preflight("OPTIONS", headers(origin="o"))
    assert not cors.is_preflight("GET", headers(origin="o", access_control_request_method="GET"))


def test_response_headers(rules: Rules) -> None:
    inference = next(p for p in rules.providers if p.name == "inference")
    got = as_dict(cors.response_headers(inference.cors, "http://localhost:3000"))
    assert got["access-control-allow-origin"] == "http://localhost:3000"
    assert got["access-control-allow-credentials"] == "true"
    exposed = got["access-control-expose-headers"].split(", ")
    assert {"x-fal-request-id", "request-id", "retry-after", "ratelimit"} <= set(exposed)
    assert cors.response_headers(inference.cors, "http://evil.test") == ()
    assert cors.response_headers(inference.cors, None) == ()
    assert "access-control-allow-credentials" not in as_dict(
        cors.response_headers(rules.cors, "http://localhost:3000")
    )


@pytest.mark.parametrize(
    ("origin", "site", "refused"),
    [
        ("http://evil.test", "cross-site", True),
        ("http://localhost:9999", "same-site", True),
        ("http://localhost:3000", "same-site", False),  # allowed
        ("http://evil.test", "same-origin", False),  # keyrelay's own origin
        ("http://evil.test", None, True),  # a browser without Sec-Fetch-* (older Safari)
        ("http://127.0.0.1:8080", None, False),  # ...calling from keyrelay's own address
        (None, "cross-site", True),  # no-cors GET (an <img>, a link): no Origin at all
        (None, "same-site", True),
        (None, "same-origin", False),
        (None, None, False),  # curl, SDKs, servers
    ],
)
def test_refuses_cross_origin_browser_requests_from_disallowed_origins(
    rules: Rules, origin: str | None, site: str | None, refused: bool
) -> None:
    table = {"origin": origin, "sec-fetch-site": site, "host": "127.0.0.1:8080"}
    result = cors.refuses(rules.cors, lambda name: table.get(name))
    assert (isinstance(result, Refusal) and result.status == 403) is refused


def test_upstream_cors_headers_are_recognised() -> None:
    assert cors.is_cors_header("Access-Control-Allow-Origin")
    assert cors.is_cors_header("access-control-expose-headers")
    assert not cors.is_cors_header("vary")
