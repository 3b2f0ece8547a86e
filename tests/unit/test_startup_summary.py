"""The start-up summary names what the rules put in effect, and no secret."""

from __future__ import annotations

from pathlib import Path

from addon.config.rules import load
from addon.observe.startup import summary

RULES = """
limits_backend: {redis: "redis://:redis-pass-91ab@10.0.0.5:6380/2", on_error: open}
budget:
  daily: 5
  monthly: 50
  alerts:
    thresholds: [50, 100]
    rate: {times: 4, window: 600}
    webhook: {url: "https://hooks.example.com/services/T0/B0/hook-token-77c1", secret: {env: S}}
admin: {loopback: false, token: {env: KR_ADMIN}, probes: [10.0.0.0/8]}
server: {trusted_proxies: [192.0.2.0/24]}
defaults:
  cors: {origins: ["https://app.example.com", "http://localhost:3000"]}
providers:
  anthropic:
    match: {prefix: /api/anthropic}
    upstream: https://api.anthropic.com
    credential: {header: x-api-key, key: {env: ANTHROPIC_API_KEY}}
    auth: {mode: tokens, tokens: {env: KR_TOKENS}}
    limits: {rate: [60/minute], concurrent: 4}
    budget: {daily: 2}
    prices: [{model: "*", input: 3, output: 15}]
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential: {header: authorization, format: "Bearer {key}", key: {env: OPENAI_API_KEY}}
    auth:
      mode: jwt
      jwt: {algorithms: [HS256], secret: {env: JWT_SECRET}, audience: app, issuer: https://id.example.com/}
    cors: {origins: []}
"""


def test_the_summary_names_what_is_in_effect_and_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    env = {"KR_TOKENS": "alice:tok-secret-1", "KR_ADMIN": "admin-secret-2", "S": "hook-3"}
    text = summary(load(path, env))
    lines = text.splitlines()
    assert lines[0] == f"keyrelay: in effect from {path}:"
    assert (
        "  limits and budgets kept in: Redis redis://10.0.0.5:6380 (prefix keyrelay, on error open)"
        in lines
    )
    assert (
        "  budget per identity: $5.00 a day, $50.00 a month; alerts at 50/100%, "
        "at 4x the hour's pace over 600s, posted to https://hooks.example.com"
    ) in lines
    assert "  admin endpoints: a token from $KR_ADMIN, probes from 10.0.0.0/8" in lines
    assert "  trusted proxies: 192.0.2.0/24" in lines
    assert (
        "  anthropic (prefix /api/anthropic): auth tokens from $KR_TOKENS; "
        "cors https://app.example.com, http://localhost:3000; limits 60 per 60s, 4 at once; "
        "budget $2.00 a day; 1 price(s)"
    ) in lines
    assert (
        "  openai (prefix /api/openai): auth jwt (HS256, issuer https://id.example.com/); "
        "cors none; limits none; budget none"
    ) in lines
    for secret in ("redis-pass-91ab", "hook-token-77c1", *env.values(), "/services/"):
        assert secret not in text
