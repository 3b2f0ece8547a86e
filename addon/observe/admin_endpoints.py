"""keyrelay's own endpoints on flows (`/_keyrelay/health`, `/_keyrelay/metrics`); what they
answer, and to whom, is decided in admin.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mitmproxy import http

from addon import peer
from addon.config.rules import Rules
from addon.keys.store import KeyStore
from addon.observe import admin
from addon.problems import Answer, Refusal, Reply

Current = Callable[[], tuple[Rules | None, KeyStore | None]]
Usage = Callable[[http.HTTPFlow], Awaitable[Answer]]


class AdminEndpoints:
    def __init__(self, current: Current, usage: Usage) -> None:
        self._current = current
        self._usage = usage

    def wants(self, flow: http.HTTPFlow) -> bool:
        """Whether the request is for one of keyrelay's own endpoints (under /_keyrelay/)."""
        return admin.is_admin_path(flow.request.path)

    async def requestheaders(self, flow: http.HTTPFlow) -> Answer | None:
        """Before routing: the answer to a request under /_keyrelay/, else None. The usage
        endpoint is each caller's own, authenticated like a provider call (budget/)."""
        rules, keys = self._current()
        request = flow.request
        if rules is None or not admin.is_admin_path(request.path):
            return None
        if request.path.partition("?")[0] == admin.USAGE:
            return await self._usage(flow)
        result = admin.serve(
            rules.admin,
            rules.admin.token_value(rules.env),
            request.method,
            request.path,
            peer.address(flow),  # behind a trusted proxy: the client's, not the proxy's
            request.headers.get("authorization"),
            lambda: {p.name: bool(keys and keys.key_for(p)) for p in rules.providers},
        )
        if isinstance(result, Refusal):
            return result
        return Reply(result.status, "admin", result.body, (("content-type", result.content_type),))
