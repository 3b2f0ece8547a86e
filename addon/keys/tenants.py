"""Per-tenant keys: a SaaS spends each customer's own provider key on that customer's calls.

The tenant is the caller's identity established by the guard (a Caller, 'kind:name': the name
counts; anonymous 'ip:' callers are no tenant), or one claim of its verified JWT. The table is
a YAML file (tenant: key), re-read when it changes, or a
Redis hash (tenant -> key) read per tenant and cached a short while. Lookups are exact: a
tenant gets the key stored under its own name or none, never anyone else's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from addon.caller import Caller
from addon.config.key_sources import TenantSpec
from addon.keys.ids import clean_key, key_id
from addon.keys.live import FileWatch, KnownValues
from addon.keys.redis_link import RedisLink
from addon.redis_client import RedisFailed

logger = logging.getLogger(__name__)

TENANT_PLACEHOLDER = "<tenant key {id}>"


def tenant_placeholder(value: str) -> str:
    return TENANT_PLACEHOLDER.format(id=key_id(value))


MAX_REMEMBERED = 100_000  # values kept for redaction; far above any real tenant table


class TenantsUnavailable(Exception):
    """The table could not be read (Redis down): answer 503, never fall back to a shared key."""


def tenant_of(caller: Caller, claim: str | None) -> str | None:
    """The caller's tenant, or None when it has none."""
    if claim is not None:
        return caller.claims.get(claim) or None
    kind, _, name = caller.identity.partition(":")
    if kind in ("", "ip") or not name:
        return None  # an anonymous caller is nobody's tenant
    return name


def parse_table(data: Any) -> dict[str, str]:
    """A tenant file's YAML: tenant -> key. Entries whose key is unusable are left out."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("is not a mapping of tenant: key")
    table = {}
    for tenant, raw in data.items():
        value = clean_key(raw) if isinstance(raw, str) else None
        if value is None:
            raise ValueError("has a tenant whose key is not a single-line string")
        table[str(tenant)] = value
    return table


class Tenants(Protocol):
    async def lookup(self, tenant: str) -> str | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class FileTenants:
    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label
        self.table: dict[str, str] = {}
        self._watch = FileWatch(path, self.reload)
        self.reload()

    def reload(self) -> None:
        try:
            table = parse_table(yaml.safe_load(self.path.read_text("utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as e:
            reason = getattr(e, "strerror", None) or (str(e) if isinstance(e, ValueError) else "")
            logger.log(
                logging.ERROR if self.table else logging.WARNING,  # see LiveKey.failed
                "keyrelay: %s: tenant keys %s cannot be used: %s (%s)",
                self.label,
                self.path,
                reason or type(e).__name__,
                "keeping the previous table" if self.table else "no tenant keys",
            )
            return
        self.table = table
        for value in table.values():
            KnownValues.remember(value, tenant_placeholder(value))
        logger.info("keyrelay: %s: %d tenant keys from %s", self.label, len(table), self.path)

    async def lookup(self, tenant: str) -> str | None:
        return self.table.get(tenant)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()


class RedisTenants:
    def __init__(self, link: RedisLink, spec: TenantSpec) -> None:
        assert spec.redis_hash is not None
        self.link, self.hash, self.ttl = link, spec.redis_hash, spec.cache
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._seen: set[str] = set()

    async def lookup(self, tenant: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(tenant)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            raw = await self.link.ask(
                "tenant key", lambda: self.link.client.hget(self.hash, tenant)
            )
        except RedisFailed as e:
            raise TenantsUnavailable(str(e)) from e
        value = clean_key(raw) if isinstance(raw, str) else None
        if len(self._cache) >= MAX_REMEMBERED:
            self._cache.clear()
        self._cache[tenant] = (now + self.ttl, value)
        if value is not None and value not in self._seen and len(self._seen) < MAX_REMEMBERED:
            self._seen.add(value)
            KnownValues.remember(value, tenant_placeholder(value))
        return value

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
