"""The `limits:` section of a provider (or `defaults:`) and the top-level `limits_backend:`."""

from __future__ import annotations

from dataclasses import dataclass

import limits

from addon.config.node import Node
from addon.targets import Pattern, PatternError, Target, compile_pattern

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


@dataclass(frozen=True, slots=True)
class BackendSpec:
    redis: str | None = None  # None: in memory, per process
    on_error: str = "closed"  # when Redis fails: "closed" answers 503, "open" lets requests by
    prefix: str = "keyrelay"
    timeout: float = 0.5  # seconds for one Redis decision, connect included
    lease_seconds: int = 3600  # an open request's slot is freed after this even if never closed
    connections: int = (
        POOL_SIZE  # Redis connections per instance; a burst queues for one up to timeout
    )


def parse_limits(node: Node | None) -> LimitSpec:
    if node is None:
        return LimitSpec()
    windows = _windows(node, "rate", "rate")
    daily = node.integer("daily", None, minimum=1)
    if daily is not None:
        windows += (Window("daily", daily, 86400),)
    endpoints = tuple(_endpoint(node, i, raw) for i, raw in enumerate(_list(node, "endpoints")))
    spec = LimitSpec(windows, node.integer("concurrent", None, minimum=1), endpoints)
    node.finish()
    return spec


def parse_backend(node: Node | None) -> BackendSpec:
    if node is None:
        return BackendSpec()
    redis = node.text("redis", None)
    if redis is not None and not redis.startswith(("redis://", "rediss://", "unix://")):
        node.fail("must be a redis://, rediss:// or unix:// URL", "redis")
    on_error = node.text("on_error", "closed")
    if on_error not in ("closed", "open"):
        node.fail("must be closed or open", "on_error")
    spec = BackendSpec(
        redis=redis,
        on_error=on_error,
        prefix=node.text("prefix", "keyrelay"),
        timeout=node.number("timeout", 0.5, minimum=0.01),
        lease_seconds=node.integer("lease_seconds", 3600, minimum=1),
        connections=node.integer("connections", POOL_SIZE, minimum=1),
    )
    node.finish()
    return spec


def _list(node: Node, name: str) -> list[object]:
    raw = node.raw(name, [])
    if not isinstance(raw, list):
        node.fail("must be a list", name)
    return raw


def _endpoint(parent: Node, index: int, raw: object) -> EndpointLimit:
    node = Node(raw, parent.file, parent.key(f"endpoints[{index}]"))
    patterns = []
    for i, text in enumerate(node.texts("match")):
        try:
            patterns.append(compile_pattern(text))
        except PatternError as e:
            node.fail(f"'{text}': {e}", f"match[{i}]")
    methods = node.texts("methods", None)
    rule = EndpointLimit(
        match=tuple(patterns),
        methods=frozenset(m.upper() for m in methods) if methods is not None else None,
        cost=node.integer("cost", 1),
        windows=_windows(node, "rate", f"endpoint{index}"),
    )
    node.finish()
    return rule


def _windows(node: Node, key: str, name: str) -> tuple[Window, ...]:
    """`rate: 60/minute` or a list of them, in the `limits` library's notation."""
    texts = node.texts(key, ())
    out = []
    for i, text in enumerate(texts):
        try:
            items = limits.parse_many(text)
        except ValueError:
            node.fail(f"'{text}' is not a rate like 60/minute or 1000 per day", key)
        for item in items:
            suffix = "" if len(texts) == 1 and len(items) == 1 else f"-{i}-{item.get_expiry()}"
            out.append(Window(f"{name}{suffix}", item.amount, item.get_expiry()))
    return tuple(out)
