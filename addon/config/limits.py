"""The `limits:` section of a provider (or `defaults:`) and the top-level `limits_backend:`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import limits
from pydantic import AfterValidator, Field

from addon.config.model import (
    ONE_OR_MANY,
    TEXT,
    Number,
    Positive,
    Text,
    Texts,
    Whole,
    fail,
    from_text,
    section,
)
from addon.targets import Pattern, Target, compile_pattern

POOL_SIZE = 32  # Redis connections per instance; a decision holds one for about a round trip


@dataclass(frozen=True, slots=True)
class Window:
    """`amount` units per `seconds`, under a name shown in RateLimit-Policy."""

    name: str
    amount: int
    seconds: int


@dataclass(frozen=True, slots=True)
class EndpointLimit:
    """Requests matching `match` (and `methods`) cost `cost` against the provider's windows
    and also count against this endpoint's own `windows`."""

    match: tuple[Pattern, ...]
    methods: frozenset[str] | None
    cost: int
    windows: tuple[Window, ...]

    def matches(self, method: str, target: Target) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return any(p.matches(target) for p in self.match)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    windows: tuple[Window, ...] = ()  # requests per window, and the daily quota
    concurrent: int | None = None  # open requests (streams included) at once
    endpoints: tuple[EndpointLimit, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.windows or self.concurrent or self.endpoints)

    def endpoint(self, method: str, target: Target) -> tuple[int, EndpointLimit] | None:
        """The first endpoint rule that matches, with its index."""
        for i, rule in enumerate(self.endpoints):
            if rule.matches(method, target):
                return i, rule
        return None


def _redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        fail("must be a redis://, rediss:// or unix:// URL")
    return url


@section
class BackendSpec:
    """The top-level `limits_backend:`: where limits, budgets and owners are kept."""

    redis: Annotated[Text, AfterValidator(_redis_url)] | None = None  # None: in memory, per process
    on_error: Literal["closed", "open"] = "closed"  # when Redis fails: 503, or let requests by
    prefix: Text = "keyrelay"
    timeout: Annotated[Number, Field(ge=0.01)] = 0.5  # seconds for one decision, connect included
    lease_seconds: Positive = (
        3600  # an open request's slot is freed after this even if never closed
    )
    connections: Positive = POOL_SIZE  # per instance; a burst queues for one up to timeout


def _rate(text: str) -> list[limits.RateLimitItem]:
    try:
        return limits.parse_many(text)
    except ValueError:
        fail(f"'{text}' is not a rate like 60/minute or 1000 per day")


# `rate: 60/minute` or a list of them, in the `limits` library's notation.
Rates = Annotated[
    tuple[Annotated[list[limits.RateLimitItem], from_text(_rate), TEXT], ...],
    ONE_OR_MANY,
]


def _windows(rates: tuple[list[limits.RateLimitItem], ...], name: str) -> tuple[Window, ...]:
    single = len(rates) == 1 and len(rates[0]) == 1
    return tuple(
        Window(
            name if single else f"{name}-{i}-{item.get_expiry()}", item.amount, item.get_expiry()
        )
        for i, items in enumerate(rates)
        for item in items
    )


@section
class EndpointLimits:
    """One of `limits.endpoints`: requests it matches cost `cost` and have windows of their own."""

    match: tuple[Annotated[Pattern, from_text(compile_pattern), TEXT], ...]
    methods: Texts | None = None
    cost: Whole = 1
    rate: Rates = ()


@section
class Limits:
    """The `limits:` section as rules.yaml writes it."""

    rate: Rates = ()
    daily: Positive | None = None
    concurrent: Positive | None = None
    endpoints: tuple[EndpointLimits, ...] = ()

    def spec(self) -> LimitSpec:
        windows = _windows(self.rate, "rate")
        if self.daily is not None:
            windows += (Window("daily", self.daily, 86400),)
        endpoints = tuple(
            EndpointLimit(
                match=e.match,
                methods=frozenset(m.upper() for m in e.methods) if e.methods is not None else None,
                cost=e.cost,
                windows=_windows(e.rate, f"endpoint{i}"),
            )
            for i, e in enumerate(self.endpoints)
        )
        return LimitSpec(windows, self.concurrent, endpoints)
