"""A session's WebSocket message as JSON. Pure."""

from __future__ import annotations

import json
from typing import Any


def json_object(content: bytes, limit: int) -> dict[str, Any] | None:
    """The message's JSON object; None when it is not one or is longer than `limit` bytes
    (not read: media)."""
    if len(content) > limit or content.lstrip()[:1] != b"{":
        return None
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
