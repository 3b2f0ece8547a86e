"""Prometheus metrics, in keyrelay's own registry (not the process-global default one).

Other modules record through the functions here, e.g. the limits module calls
`metrics.rate_limited(provider)` when it refuses a request for its rate.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_PROVIDER = "none"  # the label of requests no provider matched

# AI calls run from milliseconds (a status poll) to minutes (a long generation).
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))

Labels = tuple[str, ...]


class _Family:
    """One metric's values by label values, in a plain dict. prometheus_client's own metrics
    take a lock for every increment (~10 per request here); keyrelay records and exposes on
    mitmproxy's event loop thread only, so its values need none. prometheus_client still
    renders them (a custom collector), so the exposition format is its own."""

    def __init__(
        self,
        kind: type[CounterMetricFamily | GaugeMetricFamily],
        name: str,
        doc: str,
        labels: list[str],
    ) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, labels
        self.values: defaultdict[Labels, float] = defaultdict(float)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] += amount

    def family(self) -> Metric:
        family = self.kind(self.name, self.doc, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class _Histogram:
    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.counts: dict[Labels, list[float]] = {}  # per bucket (le), then the sum

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0.0] * (len(_BUCKETS) + 1)
        counts[bisect_left(_BUCKETS, value)] += 1  # the first bucket whose bound is >= value
        counts[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, counts in list(self.counts.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(_BUCKETS, counts, strict=False):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(labels), buckets, counts[-1])
        return family


REQUESTS = _Family(
    CounterMetricFamily,
    "keyrelay_requests",
    "Requests handled, by provider and the status the client got ('error' when none).",
    ["provider", "status"],
)
REFUSALS = _Family(
    CounterMetricFamily,
    "keyrelay_refusals",
    "Requests keyrelay answered itself instead of forwarding, by reason.",
    ["reason"],
)
LATENCY = _Histogram(
    "keyrelay_upstream_duration_seconds",
    "Forwarded requests: from the request's arrival to the response's last byte.",
    ["provider"],
)
TTFB = _Histogram(
    "keyrelay_upstream_ttfb_seconds",
    "Forwarded requests: from the request's arrival to the upstream response head.",
    ["provider"],
)
BYTES = _Family(
    CounterMetricFamily,
    "keyrelay_body_bytes",
    "Body bytes relayed, by provider and direction (request: to upstream, response: to client).",
    ["provider", "direction"],
)
OPEN_STREAMS = _Family(
    GaugeMetricFamily,
    "keyrelay_open_streams",
    "Streamed responses currently being relayed.",
    ["provider"],
)
RATE_LIMITED = _Family(
    CounterMetricFamily,
    "keyrelay_rate_limited",
    "Requests refused by a rate limit, by provider.",
    ["provider"],
)
KEY_REQUESTS = _Family(
    CounterMetricFamily,
    "keyrelay_key_requests",
    "Forwarded requests by provider, key id (a SHA-256 prefix, never the key) and status.",
    ["provider", "key_id", "status"],
)
USAGE = _Family(
    CounterMetricFamily,
    "keyrelay_usage",
    "Provider units metered from the answers (input_tokens, output_tokens, cache_*, "
    "characters, units), by provider and model. Never by identity: see /_keyrelay/usage.",
    ["provider", "model", "unit"],
)
SPEND = _Family(
    CounterMetricFamily,
    "keyrelay_spend_usd",
    "USD spent, by the rules' prices, by provider and model.",
    ["provider", "model"],
)
_ALL: tuple[_Family | _Histogram, ...] = (
    REQUESTS,
    REFUSALS,
    LATENCY,
    TTFB,
    BYTES,
    OPEN_STREAMS,
    RATE_LIMITED,
    KEY_REQUESTS,
    USAGE,
    SPEND,
)


class _Collector(Collector):
    def collect(self) -> Iterator[Metric]:
        for metric in _ALL:
            yield metric.family()


REGISTRY = CollectorRegistry(auto_describe=True)  # keyrelay's own, not the process-global one
REGISTRY.register(_Collector())


def request_done(provider: str | None, status: int | None) -> None:
    REQUESTS.inc((provider or NO_PROVIDER, str(status) if status else "error"))


def refused(reason: str) -> None:
    REFUSALS.inc((reason,))


def upstream_timing(provider: str, duration: float | None, ttfb: float | None) -> None:
    if duration is not None:
        LATENCY.observe((provider,), max(duration, 0.0))
    if ttfb is not None:
        TTFB.observe((provider,), max(ttfb, 0.0))


def body_bytes(provider: str | None, sent: int, received: int) -> None:
    label = provider or NO_PROVIDER
    BYTES.inc((label, "request"), sent)
    BYTES.inc((label, "response"), received)


def stream_opened(provider: str) -> None:
    OPEN_STREAMS.inc((provider,))


def stream_closed(provider: str) -> None:
    OPEN_STREAMS.inc((provider,), -1)


def key_used(provider: str, key_id: str, status: int | None) -> None:
    KEY_REQUESTS.inc((provider, key_id, str(status) if status else "error"))


def rate_limited(provider: str) -> None:
    """For the limits module: one request refused by a rate limit."""
    RATE_LIMITED.inc((provider,))


def usage(provider: str, model: str, units: dict[str, float], cost: float) -> None:
    for unit, n in units.items():
        USAGE.inc((provider, model, unit), n)
    SPEND.inc((provider, model), cost)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
