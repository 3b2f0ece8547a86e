"""The keys keyrelay injects, for every provider: env, file and command sources, per-tenant
keys and key pools (addon/keysources/). Built per rules load; live sources, pool cool-downs
and the Redis connection carry over a reload, so a reload neither re-runs key commands nor
forgets which keys are resting.

relay.py calls `pick` in requestheaders and `feedback` in responseheaders; redaction masks
every value `secrets()` names (each source's current and recent keys, every tenant key seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from addon.config_node import ConfigError
from addon.keysources.choice import TENANT_PLACEHOLDER, Key, ProviderKeys
from addon.keysources.ids import key_id
from addon.keysources.live import CommandKey, KnownValues, LiveKey, live_key
from addon.keysources.pool import Cooldowns, KeyPool
from addon.keysources.redis_link import RedisLink
from addon.keysources.spec import EnvSource, KeySource
from addon.keysources.tenants import FileTenants, RedisTenants, Tenants
from addon.problems import Refusal
from addon.rules import Provider, Rules

logger = logging.getLogger(__name__)

__all__ = ["Key", "KeyStore"]

STATE = "keyrelay"  # flow.metadata key (relay.STATE): the key id goes there, never the key


class KeyStore:
    def __init__(self, rules: Rules, previous: KeyStore | None = None) -> None:
        self._old_live = previous._live if previous else {}
        self._old_tenants = previous._tenants if previous else {}
        self._live: dict[tuple[str, KeySource], LiveKey] = {}
        self._tenants: dict[tuple[str, object], Tenants] = {}
        self.redis = self._redis(rules, previous)
        old_cooldowns = previous._cooldowns if previous and previous.redis is self.redis else {}
        self._cooldowns: dict[str, Cooldowns] = {}
        self._providers = {p.name: self._provider(p, rules, old_cooldowns) for p in rules.providers}
        self._started = False
        self._secrets: tuple[int, Mapping[str, str]] | None = None  # (KnownValues.version, ...)
        if previous is not None:
            previous._retire(self)
        with contextlib.suppress(RuntimeError):  # no event loop yet: start on first use
            asyncio.get_running_loop()
            self.start()

    # -- building ------------------------------------------------------------------------------

    def _redis(self, rules: Rules, previous: KeyStore | None) -> RedisLink | None:
        backend = rules.limits_backend
        wanted = any(
            p.credential.pool or (p.credential.tenants and p.credential.tenants.redis_hash)
            for p in rules.providers
        )
        if not wanted or backend.redis is None:
            return None
        settings = (backend.redis, backend.prefix, backend.timeout, backend.connections)
        if previous is not None and previous.redis and previous.redis.settings == settings:
            return previous.redis
        return RedisLink(
            backend.redis,
            prefix=backend.prefix,
            timeout=backend.timeout,
            connections=backend.connections,
        )

    def _provider(
        self, p: Provider, rules: Rules, old_cooldowns: dict[str, Cooldowns]
    ) -> ProviderKeys:
        credential = p.credential
        alternatives = [self._source(p.name, s, p.name, rules.env) for s in credential.sources]
        pool = None
        if credential.pool is not None:
            members = [
                self._source(p.name, s, f"{p.name} pool key {i + 1}", rules.env)
                for i, s in enumerate(credential.pool.sources)
            ]
            cool = old_cooldowns.get(p.name) or Cooldowns(p.name, self.redis)
            self._cooldowns[p.name] = cool
            pool = KeyPool(p.name, members, credential.pool, cool)
        tenants: Tenants | None = None
        spec = credential.tenants
        if spec is not None:
            tenant_ident: tuple[str, object] = (p.name, spec)
            old = self._old_tenants.get(tenant_ident)
            if spec.file is not None:
                tenants = old or FileTenants(spec.file, p.name)
            elif self.redis is None:
                raise ConfigError(
                    str(rules.source),
                    f"providers.{p.name}.credential.tenants.redis_hash",
                    "needs a Redis server: set limits_backend.redis",
                )
            else:
                tenants = (
                    old if old and _same_link(old, self.redis) else RedisTenants(self.redis, spec)
                )
            self._tenants[tenant_ident] = tenants
        return ProviderKeys(p.name, credential, alternatives, pool, tenants)

    def _source(self, provider: str, source: KeySource, label: str, env: dict[str, str]) -> LiveKey:
        if isinstance(source, EnvSource):
            return live_key(source, label, env)  # re-read: the environment may have changed
        ident = (label, source)
        live = self._old_live.get(ident) or live_key(source, label, env)
        self._live[ident] = live
        return live

    def _retire(self, successor: KeyStore) -> None:
        """Stop what the successor did not take over."""
        for ident, live in self._live.items():
            if successor._live.get(ident) is not live:
                live.stop()
        for tenant_ident, tenants in self._tenants.items():
            if successor._tenants.get(tenant_ident) is not tenants:
                tenants.stop()
        if self.redis is not None and successor.redis is not self.redis:
            _spawn(self.redis.close())

    def start(self) -> None:
        """Begin watching files and running commands; needs the running event loop."""
        if self._started:
            return
        self._started = True
        for live in self._live.values():
            live.start()
        for tenants in self._tenants.values():
            tenants.start()

    def stop(self) -> None:
        for live in self._live.values():
            live.stop()
        for tenants in self._tenants.values():
            tenants.stop()
        self._started = False

    # -- per request -------------------------------------------------------------------------

    async def pick(self, provider: Provider, state: dict[str, Any]) -> Key | Refusal:
        """The key for this request (tenant, pool or shared), or why there is none. Records the
        key's id (not the key) in `state` for pool feedback, logs and metrics."""
        self.start()
        keys = self._providers.get(provider.name)
        if keys is None:
            return Refusal(503, "key-not-configured", f"{provider.name} is not configured")
        picked = await keys.pick(state)
        if isinstance(picked, Key):
            state["key_id"] = picked.id
        return picked

    def feedback(self, flow: Any) -> None:
        """responseheaders: a pool key answered 429/401 rests a while."""
        state = flow.metadata.get(STATE) or {}
        keys = self._providers.get(state.get("provider") or "")
        kid, response = state.get("key_id"), flow.response
        if keys is not None and kid and response is not None:
            keys.feedback(kid, response.status_code, response.headers.get("retry-after"))

    def key_for(self, provider: Provider) -> Key | None:
        """The shared key as it stands now (health checks); None when there is none yet."""
        keys = self._providers.get(provider.name)
        return keys.shared_now() if keys else None

    def secrets(self) -> Mapping[str, str]:
        """Every key value keyrelay holds or held recently, and its placeholder, for redaction.
        The same (read-only) mapping until a key value is first seen anywhere (KnownValues)."""
        version = KnownValues.version
        if self._secrets is None or self._secrets[0] != version:
            self._secrets = (version, MappingProxyType(self._collect_secrets()))
        return self._secrets[1]

    def _collect_secrets(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for keys in self._providers.values():
            for live in keys.live():
                for value in live.history:
                    found[value] = live.placeholder
            if keys.tenants is not None:
                for value in keys.tenants.values():
                    found[value] = TENANT_PLACEHOLDER.format(id=key_id(value))
        return found

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


def _same_link(tenants: Tenants, link: RedisLink) -> bool:
    return isinstance(tenants, RedisTenants) and tenants.link is link


_tasks: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> None:
    try:
        task = asyncio.get_running_loop().create_task(coroutine)
    except RuntimeError:
        coroutine.close()
        return
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
