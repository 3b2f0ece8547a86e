"""Which upstream answers are about the key itself, and so rest a pool key for everybody.

A 401 or 429 may come from what one client sent rather than from the key: a foreign
`OpenAI-Organization` gets a 401, a malformed request to some gateways a 429. Resting the key
then would let any client take every pool key out of service, one request each. So a key rests
only when the answer says the key is at fault:

- 429 with `Retry-After` or the provider's rate-limit headers (`x-ratelimit-*`,
  `anthropic-ratelimit-*`), or a body naming a rate or quota error of the key's account;
- 401 with a body naming the key: OpenAI's and ElevenLabs' `invalid_api_key`, Anthropic's
  `authentication_error`, ElevenLabs' `quota_exceeded`.

Pure: reads a status, header names and a (small) JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

RESTING_STATUSES = frozenset({401, 429})
MAX_BODY = 64 * 1024  # an error body is small; a larger one is not read for this
RATE_HEADERS = ("retry-after", "x-ratelimit-", "anthropic-ratelimit-")
KEY_REFUSED = frozenset({"invalid_api_key", "authentication_error", "quota_exceeded"})
KEY_LIMITED = frozenset(
    {"rate_limit_error", "rate_limit_exceeded", "insufficient_quota", "quota_exceeded"}
)


def about_the_key(status: int, header_names: Iterable[str], body: bytes) -> bool:
    if status == 429:
        if any(name.lower().startswith(RATE_HEADERS) for name in header_names):
            return True
        return bool(error_codes(body) & KEY_LIMITED)
    if status == 401:
        return bool(error_codes(body) & KEY_REFUSED)
    return False


def error_codes(body: bytes) -> set[str]:
    """The machine-readable error names of a provider's error body: OpenAI's and Anthropic's
    `error.code` / `error.type`, ElevenLabs' `detail.status`."""
    if not body or len(body) > MAX_BODY:
        return set()
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return set()
    if not isinstance(data, dict):
        return set()
    found: list[Any] = []
    for section, names in (("error", ("code", "type")), ("detail", ("status",))):
        inner = data.get(section)
        if isinstance(inner, dict):
            found += [inner.get(name) for name in names]
    return {value for value in found if isinstance(value, str)}
