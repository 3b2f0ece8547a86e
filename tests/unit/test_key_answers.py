"""Which upstream answers rest a pool key: only those about the key itself."""

from __future__ import annotations

import json

import pytest

from addon.keys.answers import about_the_key


def error(**fields: str) -> bytes:
    return json.dumps({"error": fields}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "rests"),
    [
        # OpenAI: a bad key, against a foreign OpenAI-Organization or project chosen by a client.
        (401, [], error(code="invalid_api_key", type="invalid_request_error"), True),
        (401, [], error(code="mismatched_organization", type="invalid_request_error"), False),
        (401, [], error(code="mismatched_project"), False),
        # Anthropic, ElevenLabs.
        (401, [], b'{"type":"error","error":{"type":"authentication_error"}}', True),
        (401, [], b'{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}', True),
        (401, [], b'{"detail":{"status":"quota_exceeded"}}', True),
        (401, [], b"{}", False),
        (401, [], b"", False),
        (401, [], b"<html>401</html>", False),
        (401, [], error(code="invalid_api_key") + b" " * 70_000, False),  # too large to read
        # 429: the provider's rate-limit headers or a rate error of the key's account.
        (429, ["Retry-After"], b"", True),
        (429, ["x-ratelimit-remaining-requests"], b"", True),
        (429, ["anthropic-ratelimit-requests-remaining"], b"", True),
        (429, [], error(code="insufficient_quota"), True),
        (429, [], b'{"type":"error","error":{"type":"rate_limit_error"}}', True),
        (429, ["content-type"], b'{"error": "slow down"}', False),
        (403, ["retry-after"], error(code="invalid_api_key"), False),
        (500, ["retry-after"], b"", False),
    ],
)
def test_about_the_key(status: int, headers: list[str], body: bytes, rests: bool) -> None:
    assert about_the_key(status, headers, body) is rests
