"""Prometheus metrics, in keyrelay's own registry (not the process-global default one).

Other modules record through the functions here, e.g. the limits module calls
`metrics.rate_limited(provider)` when it refuses a request for its rate.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# `*_created` samples double the output and say nothing a scraper needs here.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_PROVIDER = "none"  # the label of requests no provider matched

# AI calls run from milliseconds (a status poll) to minutes (a long generation).
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "keyrelay_requests",
    "Requests handled, by provider and the status the client got ('error' when none).",
    ["provider", "status"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "keyrelay_refusals",
    "Requests keyrelay answered itself instead of forwarding, by reason.",
    ["reason"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "keyrelay_upstream_duration_seconds",
    "Forwarded requests: from the request's arrival to the response's last byte.",
    ["provider"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
TTFB = Histogram(
    "keyrelay_upstream_ttfb_seconds",
    "Forwarded requests: from the request's arrival to the upstream response head.",
    ["provider"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
BYTES = Counter(
    "keyrelay_body_bytes",
    "Body bytes relayed, by provider and direction (request: to upstream, response: to client).",
    ["provider", "direction"],
    registry=REGISTRY,
)
OPEN_STREAMS = Gauge(
    "keyrelay_open_streams",
    "Streamed responses currently being relayed.",
    ["provider"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "keyrelay_rate_limited",
    "Requests refused by a rate limit, by provider.",
    ["provider"],
    registry=REGISTRY,
)

KEY_REQUESTS = Counter(
    "keyrelay_key_requests",
    "Forwarded requests by provider, key id (a SHA-256 prefix, never the key) and status.",
    ["provider", "key_id", "status"],
    registry=REGISTRY,
)

USAGE = Counter(
    "keyrelay_usage",
    "Provider units metered from the answers (input_tokens, output_tokens, cache_*, "
    "characters, units), by provider and model. Never by identity: see /_keyrelay/usage.",
    ["provider", "model", "unit"],
    registry=REGISTRY,
)
SPEND = Counter(
    "keyrelay_spend_usd",
    "USD spent, by the rules' prices, by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
)


# Each metric's child per label values: `.labels()` validates and locks on every call, and
# these few children (providers x statuses, reasons) are asked for on every request.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _labelled[M: (Counter, Gauge, Histogram)](metric: M, *labels: str) -> M:
    child = _children.get((metric, labels))
    if child is None:
        child = _children[(metric, labels)] = metric.labels(*labels)
    return child


def request_done(provider: str | None, status: int | None) -> None:
    _labelled(REQUESTS, provider or NO_PROVIDER, str(status) if status else "error").inc()


def refused(reason: str) -> None:
    _labelled(REFUSALS, reason).inc()


def upstream_timing(provider: str, duration: float | None, ttfb: float | None) -> None:
    if duration is not None:
        _labelled(LATENCY, provider).observe(max(duration, 0.0))
    if ttfb is not None:
        _labelled(TTFB, provider).observe(max(ttfb, 0.0))


def body_bytes(provider: str | None, sent: int, received: int) -> None:
    label = provider or NO_PROVIDER
    _labelled(BYTES, label, "request").inc(sent)
    _labelled(BYTES, label, "response").inc(received)


def stream_opened(provider: str) -> None:
    _labelled(OPEN_STREAMS, provider).inc()


def stream_closed(provider: str) -> None:
    _labelled(OPEN_STREAMS, provider).dec()


def key_used(provider: str, key_id: str, status: int | None) -> None:
    _labelled(KEY_REQUESTS, provider, key_id, str(status) if status else "error").inc()


def rate_limited(provider: str) -> None:
    """For the limits module: one request refused by a rate limit."""
    _labelled(RATE_LIMITED, provider).inc()


def usage(provider: str, model: str, units: dict[str, float], cost: float) -> None:
    for unit, n in units.items():
        _labelled(USAGE, provider, model, unit).inc(n)
    _labelled(SPEND, provider, model).inc(cost)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
