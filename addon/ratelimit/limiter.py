"""From a routed request to a limit decision: which counters it charges, what happens when the
store is down, and the 429 answer with Retry-After and the IETF RateLimit fields."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import secrets
from dataclasses import dataclass

from addon.config.limits import BackendSpec, LimitSpec
from addon.problems import Refusal
from addon.ratelimit.backend import Check, Decision, Slots, Standing, Store, StoreError
from addon.ratelimit.memory import MemoryStore
from addon.ratelimit.redis_store import RedisStore
from addon.redis_client import Every
from addon.targets import Target

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two logs of the same kind of store failure
# A slot whose release failed (Redis busy or restarting) is tried again after these pauses;
# left alone it would count against the limit until lease_seconds (an hour by default).
RELEASE_RETRIES = (0.2, 1.0, 5.0, 30.0)


@dataclass(frozen=True, slots=True)
class Admitted:
    slots: Slots | None  # to release when the request ends


def make_store(spec: BackendSpec) -> Store:
    if spec.redis is None:
        return MemoryStore()
    return RedisStore(
        spec.redis,
        prefix=spec.prefix,
        timeout=spec.timeout,
        lease_seconds=spec.lease_seconds,
        connections=spec.connections,
    )


class Limiter:
    def __init__(self, backend: BackendSpec, store: Store) -> None:
        self.backend, self.store = backend, store
        self._log = Every(LOG_EVERY)

    async def admit(
        self, spec: LimitSpec, provider: str, identity: str, method: str, target: Target
    ) -> Admitted | Refusal:
        if not spec.active:
            return Admitted(None)
        who = _who(provider, identity)
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
            slots = Slots(f"{tag}:open", spec.concurrent, _lease_id())
        try:
            decision = await self.store.decide(tuple(checks), slots)
        except StoreError as e:
            # Only this request is answered per on_error; whether later ones skip the store
            # for a while (Redis unreachable) or try again (busy, slow) is the store's call.
            if self._log(e.kind):
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
        for pause in (*RELEASE_RETRIES, None):
            try:
                await self.store.release(admitted.slots)
                return
            except StoreError as e:
                if pause is None:  # the lease expires by itself after lease_seconds
                    logger.error("keyrelay: limits: releasing a slot failed (%s)", e)
                    return
            await asyncio.sleep(pause)

    def _unavailable(self) -> Admitted | Refusal:
        if self.backend.on_error == "open":
            return Admitted(None)
        return Refusal(
            503,
            "limits-unavailable",
            "keyrelay cannot check rate limits right now; try again shortly",
            headers=(("retry-after", "1"),),
        )


RATE_LIMITED = "rate-limited"  # the refusal reason; metrics count these per provider


def too_many(decision: Decision) -> Refusal:
    what = (
        "too many open requests"
        if decision.blocked == "concurrent"
        else f"the {decision.blocked} limit is used up"
    )
    return Refusal(
        429,
        RATE_LIMITED,
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


@functools.lru_cache(maxsize=4096)  # the same few callers, request after request
def _who(provider: str, identity: str) -> str:
    # Hashed: identities may hold any character, and Redis needs no personal data.
    return hashlib.sha256(f"{provider}\0{identity}".encode()).hexdigest()[:24]


# A lease names one request's concurrency slot among every instance sharing the store: this
# process's random prefix and a counter (uuid4 read the kernel's random source each time).
_LEASE_PREFIX = secrets.token_hex(8)
_leases = itertools.count()


def _lease_id() -> str:
    return f"{_LEASE_PREFIX}{next(_leases):x}"
