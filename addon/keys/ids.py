"""Small pure helpers about key values: a stable public id, validation, `retry-after`."""

from __future__ import annotations

import functools
import hashlib
import time
from email.utils import parsedate_to_datetime


@functools.lru_cache(maxsize=256)  # asked on every request, for a handful of keys
def key_id(value: str) -> str:
    """A stable, non-reversible id for a key (a SHA-256 prefix): safe in logs and metrics.

    Not the key's last characters: those are part of the secret, and short keys would give
    away a large share of it."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def clean_key(raw: str) -> str | None:
    """The key in a file's or command's output: surrounding whitespace (the trailing newline
    of `echo` and of most secret files) removed. None when empty or when it holds a control
    character, which could split or forge a header."""
    value = raw.strip()
    if not value or any(c < " " or c == "\x7f" for c in value):
        return None
    return value


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
