"""One provider's keys put together: a tenant's own key first (when tenants are configured),
else the shared key (`key:` alternatives) or the pool's next key. Answers a Key or a Refusal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from addon.caller import Caller
from addon.config.credential import Credential
from addon.keys.ids import key_id
from addon.keys.live import LiveKey
from addon.keys.pool import KeyPool
from addon.keys.tenants import Tenants, TenantsUnavailable, tenant_of, tenant_placeholder
from addon.problems import Refusal


@dataclass(frozen=True, slots=True)
class Key:
    value: str
    placeholder: str  # what stored and shown flows carry instead, e.g. "<FAL_KEY>"

    @property
    def id(self) -> str:
        return key_id(self.value)


class ProviderKeys:
    def __init__(
        self,
        name: str,
        credential: Credential,
        alternatives: list[LiveKey],
        pool: KeyPool | None,
        tenants: Tenants | None,
    ) -> None:
        self.name, self.credential = name, credential
        self.alternatives, self.pool, self.tenants = alternatives, pool, tenants

    def live(self) -> Iterator[LiveKey]:
        yield from self.alternatives
        if self.pool is not None:
            yield from self.pool.members

    def shared_now(self) -> Key | None:
        """The shared key as it stands, without waiting (health, tests)."""
        for member in self.live():
            if member.value:
                return Key(member.value, member.placeholder)
        return None

    async def pick(self, caller: Caller) -> Key | Refusal:
        spec = self.credential.tenants
        if self.tenants is not None and spec is not None:
            tenant = tenant_of(caller, spec.claim)
            if tenant is not None:
                try:
                    value = await self.tenants.lookup(tenant)
                except TenantsUnavailable:
                    return Refusal(
                        503, "tenant-keys-unavailable", f"{self.name}: tenant keys cannot be read"
                    )
                if value is not None:
                    return Key(value, tenant_placeholder(value))
            if spec.fallback == "refuse":
                return Refusal(
                    403, "no-tenant-key", f"no {self.name} key is configured for this client"
                )
        return await self._shared()

    async def _shared(self) -> Key | Refusal:
        if self.pool is not None:
            picked = await self.pool.pick()
            if isinstance(picked, LiveKey) and picked.value:
                return Key(picked.value, picked.placeholder)
            if isinstance(picked, float):
                wait = max(1, int(picked + 0.999))
                return Refusal(
                    503,
                    "keys-cooling-down",
                    f"every {self.name} key was refused or rate limited; retry in {wait}s",
                    headers=(("retry-after", str(wait)),),
                )
        for member in self.alternatives:
            if value := await member.ready():
                return Key(value, member.placeholder)
        return Refusal(
            503,
            "key-not-configured",
            f"{self.name} is not configured: set {self.credential.describe_missing()}",
        )

    def feedback(self, kid: str, status: int, retry_after: str | None) -> None:
        if self.pool is not None:
            self.pool.feedback(kid, status, retry_after)
