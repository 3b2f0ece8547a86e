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
from addon.redis_client import RedisConnection, RedisFailed

Current = Callable[[], tuple[Rules | None, KeyStore | None]]
Usage = Callable[[http.HTTPFlow], Awaitable[Answer]]


class AdminEndpoints:
    def __init__(
        self, current: Current, usage: Usage, serving: Callable[[], bool] = lambda: True
    ) -> None:
        self._current = current
        self._usage = usage
        self._serving = serving  # False while draining
        self._redis: tuple[str, RedisConnection] | None = None  # the readiness probe's own

    def wants(self, flow: http.HTTPFlow) -> bool:
        """Whether the request is for one of keyrelay's own endpoints (under /_keyrelay/)."""
        return admin.is_admin_path(flow.request.path)

    async def requestheaders(self, flow: http.HTTPFlow) -> Answer | None:
        """Before routing: the answer to a request under /_keyrelay/, else None. The usage
        endpoint is each caller's own, authenticated like a provider call (budget/)."""
        rules, keys = self._current()
        request = flow.request
        route = request.path.partition("?")[0]
        if route in admin.PROBES and request.method in ("GET", "HEAD"):
            return await self._probe(flow, route, rules, keys)
        if rules is None or not admin.is_admin_path(request.path):
            return None
        if route == admin.USAGE:
            return await self._usage(flow)
        result = admin.serve(
            rules.admin,
            rules.admin.token_value(rules.env),
            request.method,
            request.path,
            peer.address(flow),  # behind a trusted proxy: the client's, not the proxy's
            request.headers.get("authorization"),
            lambda: _configured(rules, keys),
        )
        if isinstance(result, Refusal):
            return result
        return _reply(result)

    async def _probe(
        self, flow: http.HTTPFlow, route: str, rules: Rules | None, keys: KeyStore | None
    ) -> Answer:
        """/live: the process answers. /ready: rules are loaded, every provider has a key, and
        Redis answers where the rules use it."""
        if rules is None:
            return _reply(
                admin.readiness({"rules": False}) if route == admin.READY else admin.LIVE_ANSWER
            )
        refusal = admin.probe_refusal(
            rules.admin,
            rules.admin.token_value(rules.env),
            peer.address(flow),
            flow.request.headers.get("authorization"),
        )
        if refusal is not None:
            return refusal
        if route == admin.LIVE:
            return _reply(admin.LIVE_ANSWER)
        checks = {
            "serving": self._serving(),
            "rules": True,
            "keys": all(_configured(rules, keys).values()),
        }
        if (url := rules.limits_backend.redis) is not None:
            checks["redis"] = await self._redis_answers(url, rules.limits_backend.timeout)
        return _reply(admin.readiness(checks))

    async def _redis_answers(self, url: str, timeout: float) -> bool:
        if self._redis is None or self._redis[0] != url:
            if self._redis is not None:
                await self._redis[1].close()
            self._redis = (url, RedisConnection(url, timeout=timeout, size=1))
        connection = self._redis[1]
        try:
            await connection.call(lambda: connection.client.ping())
        except RedisFailed:
            return False
        return True


def _configured(rules: Rules, keys: KeyStore | None) -> dict[str, bool]:
    """Each provider, and whether it has a key."""
    return {p.name: bool(keys and keys.key_for(p)) for p in rules.providers}


def _reply(answer: admin.Answer) -> Reply:
    return Reply(answer.status, "admin", answer.body, (("content-type", answer.content_type),))
