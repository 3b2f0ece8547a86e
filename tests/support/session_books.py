"""What the session tests read after a session: the caller's books once its settlements have
landed (just after the socket closes), and the close codes a fake upstream received."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import yaml

from support.client import HttpClient
from support.redis_server import RedisServer
from support.session_upstream import SessionUpstream


@contextlib.contextmanager
def kept_in(where: str) -> Iterator[str | None]:
    """Where the books are kept: keyrelay's memory (None), or a shared redis-server (its URL)."""
    if where == "memory":
        yield None
        return
    with RedisServer() as server:
        yield server.url


def spent(port: int, credential: tuple[str, str], until: float | None = None) -> dict[str, Any]:
    """The caller's day in the books, once nothing is reserved (and, given, `until` is spent)."""
    figures: dict[str, Any] = {}
    for _ in range(100):
        figures = HttpClient(port).get("/_keyrelay/usage", [credential]).json()
        if figures["reserved"] == 0 and (until is None or figures["spent"] >= until - 1e-9):
            return figures
        time.sleep(0.05)
    return figures


def closes(upstream: SessionUpstream) -> list[int]:
    """The close codes the upstream received (its thread records one just after the client
    saw it; waited for up to 15 s, as a loaded machine may take)."""
    for _ in range(300):
        if upstream.closes:
            break
        time.sleep(0.05)
    return [code for code, _ in upstream.closes]


def rules(
    name: str,
    provider: dict[str, Any],
    *,
    daily: float,
    redis: str | None,
    header: str | None = None,
) -> str:
    """rules.yaml with one provider, a daily budget and keyrelay tokens (read from `KR_TOKENS`,
    in `header` when given), the books in `redis` when given."""
    auth: dict[str, Any] = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}
    if header:
        auth["header"] = header
    doc: dict[str, Any] = {
        "defaults": {"auth": auth},
        "budget": {"daily": daily},
        "providers": {name: provider},
    }
    if redis:
        doc["limits_backend"] = {"redis": redis}
    return yaml.safe_dump(doc, sort_keys=False)
