"""The keys keyrelay injects, for every provider: env, file and command sources, per-tenant
keys and key pools (the modules beside this one).

relay.py asks for a key in `requestheaders` and reports the answer in `responseheaders` and
`response` (a pool key whose 429/401 was about the key itself rests a while); masking hides
every value `secrets()` names (every key value the process has held: KnownValues).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import MappingProxyType

from mitmproxy import http

from addon import flowstate
from addon.caller import Caller
from addon.config.key_sources import EnvSource, KeySource
from addon.config.model import ConfigError
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.keys import answers
from addon.keys.choice import Key, ProviderKeys
from addon.keys.live import CommandKey, KnownValues, LiveKey, live_key
from addon.keys.pool import Cooldowns, KeyPool
from addon.keys.redis_link import RedisLink
from addon.keys.tenants import FileTenants, RedisTenants, Tenants
from addon.problems import Refusal
from addon.resources import Generation
from addon.transport.component import read_answer_whole

logger = logging.getLogger(__name__)

__all__ = ["Key", "KeyStore"]


class KeyStore:
    """Built per rules load. Key sources, tenant tables, pool cool-downs and the Redis link come
    from `live` (addon/resources.py), so they carry over a reload when their spec is unchanged."""

    def __init__(self, rules: Rules, live: Generation | None = None) -> None:
        live = live or Generation({})  # unit tests: nothing to carry over
        self._live: list[LiveKey] = []
        self._tenants: list[Tenants] = []
        self.redis = self._redis(rules, live)
        self._providers = {p.name: self._provider(p, rules, live) for p in rules.providers}
        self._secrets: tuple[int, Mapping[str, str]] | None = None  # (KnownValues.version, ...)
        self._started = False
        with contextlib.suppress(RuntimeError):  # no event loop yet: start on first use
            asyncio.get_running_loop()
            self.start()

    # -- building ------------------------------------------------------------------------------

    def _redis(self, rules: Rules, live: Generation) -> RedisLink | None:
        backend = rules.limits_backend
        wanted = any(
            p.credential.pool or (p.credential.tenants and p.credential.tenants.redis_hash)
            for p in rules.providers
        )
        url = backend.redis
        if not wanted or url is None:
            return None
        settings = (url, backend.prefix, backend.timeout, backend.connections)
        return live.get(
            ("redis-link", settings),
            lambda: RedisLink(
                url,
                prefix=backend.prefix,
                timeout=backend.timeout,
                connections=backend.connections,
            ),
        )

    def _provider(self, p: Provider, rules: Rules, live: Generation) -> ProviderKeys:
        credential = p.credential
        alternatives = [self._source(s, p.name, rules.env, live) for s in credential.key]
        pool = None
        if credential.pool is not None:
            members = [
                self._source(s, f"{p.name} pool key {i + 1}", rules.env, live)
                for i, s in enumerate(credential.pool.keys)
            ]
            link = self.redis
            cool = live.get(("cooldowns", p.name, link), lambda: Cooldowns(p.name, link))
            pool = KeyPool(p.name, members, credential.pool, cool)
        tenants: Tenants | None = None
        spec = credential.tenants
        if spec is not None:
            if spec.file is not None:
                path = spec.file
                tenants = live.get(("tenants", p.name, spec), lambda: FileTenants(path, p.name))
            elif (link := self.redis) is None:
                raise ConfigError(
                    str(rules.source),
                    f"providers.{p.name}.credential.tenants.redis_hash",
                    "needs a Redis server: set limits_backend.redis",
                )
            else:
                tenants = live.get(
                    ("tenants", p.name, spec, link), lambda: RedisTenants(link, spec)
                )
            self._tenants.append(tenants)
        return ProviderKeys(p.name, credential, alternatives, pool, tenants)

    def _source(
        self, source: KeySource, label: str, env: dict[str, str], live: Generation
    ) -> LiveKey:
        if isinstance(source, EnvSource):
            return live_key(source, label, env)  # re-read: the environment may have changed
        key = live.get(("key", label, source), lambda: live_key(source, label, env))
        self._live.append(key)
        return key

    def start(self) -> None:
        """Begin watching files and running commands; needs the running event loop. Starting
        again is harmless (Resources starts them too, once running)."""
        if self._started:
            return
        self._started = True
        for key in self._live:
            key.start()
        for tenants in self._tenants:
            tenants.start()

    # -- per request -------------------------------------------------------------------------

    async def requestheaders(
        self, flow: http.HTTPFlow, provider: Provider, caller: Caller
    ) -> Key | Refusal:
        """The key for this request (tenant, pool or shared), or why there is none. Records the
        key's id (not the key) in the flow's state for pool feedback, logs and metrics."""
        self.start()  # (in unit tests, the first pick is the first chance)
        keys = self._providers.get(provider.name)
        if keys is None:
            return Refusal(503, "key-not-configured", f"{provider.name} is not configured")
        picked = await keys.pick(caller)
        if isinstance(picked, Key):
            flowstate.of(flow)["key_id"] = picked.id
        return picked

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """A pool key answered 401/429: read that (small) answer whole, to tell in `response`
        whether it is about the key (keys/answers.py)."""
        if self._resting_candidate(flow) is None:
            return
        assert flow.response is not None
        length = flow.response.headers.get("content-length", "")
        if not (length.isdigit() and int(length) > answers.MAX_BODY):
            read_answer_whole(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        """A pool key whose answer was about the key itself rests a while."""
        candidate = self._resting_candidate(flow)
        if candidate is None:
            return
        keys, kid = candidate
        response = flow.response
        assert response is not None
        body = response.get_content(strict=False) or b""
        if answers.about_the_key(response.status_code, response.headers.keys(), body):
            keys.feedback(kid, response.status_code, response.headers.get("retry-after"))

    def _resting_candidate(self, flow: http.HTTPFlow) -> tuple[ProviderKeys, str] | None:
        state = flowstate.of(flow)
        keys = self._providers.get(state.get("provider") or "")
        kid, response = state.get("key_id"), flow.response
        if keys is None or keys.pool is None or not kid or response is None:
            return None
        if response.status_code not in answers.RESTING_STATUSES:
            return None
        return keys, kid

    def key_for(self, provider: Provider) -> Key | None:
        """The shared key as it stands now (health checks); None when there is none yet."""
        keys = self._providers.get(provider.name)
        return keys.shared_now() if keys else None

    def secrets(self) -> Mapping[str, str]:
        """Every key value this process has held, and its placeholder, for redaction: not only
        this load's (KnownValues). The same (read-only) mapping until a value is first seen."""
        version = KnownValues.version
        if self._secrets is None or self._secrets[0] != version:
            self._secrets = (version, MappingProxyType(dict(KnownValues.held)))
        return self._secrets[1]

    def log_status(self, rules: Rules) -> None:
        for provider in rules.providers:
            keys = self._providers[provider.name]
            if keys.shared_now() or (keys.tenants and not keys.pool and not keys.alternatives):
                logger.info("keyrelay: %s is configured", provider.name)
            elif any(isinstance(live, CommandKey) for live in keys.live()):
                logger.info("keyrelay: %s: waiting for its key command", provider.name)
            else:
                logger.warning(
                    "keyrelay: %s has no key: set %s",
                    provider.name,
                    provider.credential.describe_missing(),
                )
