"""Rules allowing a browser origin, as the README says, and the CORS headers of an answer."""

from __future__ import annotations

from collections.abc import Iterable

from .proxy import DEFAULT_RULES

ALLOWED = "http://localhost:3000"


def allowing(origin: str = ALLOWED, text: str | None = None) -> str:
    """The repo's rules (or `text`) with `origin` allowed in defaults.cors.origins."""
    text = DEFAULT_RULES.read_text() if text is None else text
    allowed = text.replace("origins: []", f"origins: [{origin}]", 1)
    assert allowed != text, "no empty defaults.cors.origins to fill in"
    return allowed


def cors_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers if k.lower().startswith("access-control-")}
