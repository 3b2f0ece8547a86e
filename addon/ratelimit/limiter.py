"""From a routed request to a limit decision: which counters it charges, what happens when the
store is down, and the 429 answer with Retry-After and the IETF RateLimit fields."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass

from addon.problems import Refusal
from addon.ratelimit.backend import Check, Decision, Slots, Standing, Store, StoreError
from addon.ratelimit.config import BackendSpec, LimitSpec
from addon.ratelimit.memory import MemoryStore
from addon.ratelimit.redis_store import RedisStore
from addon.targets import Target

logger = logging.getLogger(__name__)

DOWN_FOR = 1.0  # after a store failure, answer per on_error for this long without asking it


@dataclass(frozen=True, slots=True)
class Admitted:
    slots: Slots | None  # to release when the request ends


def make_store(spec: BackendSpec) -> Store:
    if spec.redis is None:
        return MemoryStore()
    return RedisStore(
        spec.redis, prefix=spec.prefix, timeout=spec.timeout, lease_seconds=spec.lease_seconds
    )


class Limiter:
    def __init__(self, backend: BackendSpec, store: Store) -> None:
        self.backend, self.store = backend, store
        self._down_until = 0.0

    async def admit(
        self, spec: LimitSpec, provider: str, identity: str, method: str, target: Target
    ) -> Admitted | Refusal:
        if not spec.active:
            return Admitted(None)
        # Hashed: identities may hold any character, and Redis needs no personal data.
        who = hashlib.sha256(f"{provider}\0{identity}".encode()).hexdigest()[:24]
        tag = f"{{{who}}}"  # one Redis Cluster slot for all of a decision's keys
        cost = 1
        checks: list[Check] = []
        if match := spec.endpoint(method, target):
            index, rule = match
            cost = rule.cost
            checks += [Check(f"{tag}:e{index}", w, 1) for w in rule.windows]
        checks = [Check(f"{tag}:p", w, cost) for w in spec.windows] + checks
        slots = None
        if spec.concurrent:
            slots = Slots(f"{tag}:open", spec.concurrent, uuid.uuid4().hex)
        if time.monotonic() < self._down_until:
            return self._unavailable()
        try:
            decision = await self.store.decide(tuple(checks), slots)
        except StoreError as e:
            self._down_until = time.monotonic() + DOWN_FOR
            logger.error(
                "keyrelay: limits: the store failed (%s); failing %s", e, self.backend.on_error
            )
            return self._unavailable()
        if not decision.allowed:
            return too_many(decision)
        return Admitted(slots)

    async def release(self, admitted: Admitted) -> None:
        if admitted.slots is None:
            return
        try:
            await self.store.release(admitted.slots)
        except StoreError as e:
            # The lease expires by itself after lease_seconds.
            logger.error("keyrelay: limits: releasing a slot failed (%s)", e)

    def _unavailable(self) -> Admitted | Refusal:
        if self.backend.on_error == "open":
            return Admitted(None)
        return Refusal(
            503,
            "limits-unavailable",
            "keyrelay cannot check rate limits right now; try again shortly",
            headers=(("retry-after", "1"),),
        )


def too_many(decision: Decision) -> Refusal:
    what = (
        "too many open requests"
        if decision.blocked == "concurrent"
        else f"the {decision.blocked} limit is used up"
    )
    return Refusal(
        429,
        "rate-limited",
        f"{what}; retry in {decision.retry_after} s",
        headers=(("retry-after", str(decision.retry_after)), *ratelimit_fields(decision)),
    )


def ratelimit_fields(decision: Decision) -> tuple[tuple[str, str], ...]:
    """RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers, structured fields)."""
    if not decision.standings:
        return ()
    policy = ", ".join(
        f'"{s.window.name}";q={s.window.amount};w={s.window.seconds}' for s in decision.standings
    )
    current = ", ".join(_current(s) for s in decision.standings)
    return (("ratelimit-policy", policy), ("ratelimit", current))


def _current(s: Standing) -> str:
    return f'"{s.window.name}";r={s.remaining};t={s.reset}'
