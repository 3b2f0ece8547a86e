"""keyrelay's GenAI histograms, kept the way metrics.py keeps Prometheus's: a measurement is a
dict lookup and a bisect on the event loop, and a thread exports the points by OTLP/HTTP every
OTEL_METRIC_EXPORT_INTERVAL, as the SDK's periodic reader would.

Not the SDK's instruments: each of their measurements cleans, hashes and sorts its attributes
on the request's thread (some 50 us, four a call); the points exported are the SDK's own data
classes, through its OTLP exporter. Imported only when telemetry is on (telemetry_sdk.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from addon.observe.telemetry_attrs import Attributes

logger = logging.getLogger(__name__)

Key = tuple[tuple[str, str | int | float | bool], ...]


@dataclass(frozen=True, slots=True)
class Instrument:
    name: str
    unit: str
    description: str
    bounds: tuple[float, ...]


@dataclass(slots=True)
class _Series:
    counts: list[int]  # per bucket: len(bounds) + 1
    sum: float = 0.0
    count: int = 0
    min: float = float("inf")
    max: float = float("-inf")


@dataclass
class _Table:
    instrument: Instrument
    series: dict[Key, _Series] = field(default_factory=dict)


class Histograms:
    def __init__(
        self, instruments: Sequence[Instrument], resource: Resource, scope: str, version: str
    ) -> None:
        self._tables = {i.name: _Table(i) for i in instruments}
        self._resource = resource
        self._scope = InstrumentationScope(scope, version)
        self._lock = threading.Lock()  # the event loop records, the thread reads
        env = os.environ.get
        preference = env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "").lower()
        self._delta = preference.strip() in ("delta", "lowmemory")  # both: histograms as delta
        self._interval = _seconds(env("OTEL_METRIC_EXPORT_INTERVAL"), 60.0)
        self._exporter = OTLPMetricExporter()
        self._start = time.time_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyrelay-otel-metrics", daemon=True)
        self._thread.start()

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        table = self._tables[name]
        key: Key = tuple(attributes.items())
        with self._lock:
            series = table.series.get(key)
            if series is None:
                series = table.series[key] = _Series([0] * (len(table.instrument.bounds) + 1))
            series.counts[bisect_left(table.instrument.bounds, value)] += 1
            series.sum += value
            series.count += 1
            series.min = min(series.min, value)
            series.max = max(series.max, value)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.export()

    def export(self) -> None:
        data = self._collect()
        if data is None:
            return
        try:
            self._exporter.export(data)  # logs its own failures
        except Exception:
            logger.exception("keyrelay: OpenTelemetry: metrics not exported")

    def shutdown(self) -> None:
        """The last points go out; then the thread ends."""
        self._stop.set()
        self.export()
        self._exporter.shutdown()

    def _collect(self) -> MetricsData | None:
        now = time.time_ns()
        temporality = (
            AggregationTemporality.DELTA if self._delta else AggregationTemporality.CUMULATIVE
        )
        metrics = []
        with self._lock:
            for table in self._tables.values():
                points = [
                    HistogramDataPoint(
                        attributes=dict(key),
                        start_time_unix_nano=self._start,
                        time_unix_nano=now,
                        count=s.count,
                        sum=s.sum,
                        bucket_counts=list(s.counts),
                        explicit_bounds=table.instrument.bounds,
                        min=s.min,
                        max=s.max,
                    )
                    for key, s in table.series.items()
                ]
                if self._delta:
                    table.series.clear()
                if points:
                    i = table.instrument
                    metrics.append(
                        Metric(i.name, i.description, i.unit, Histogram(points, temporality))
                    )
            if self._delta:
                self._start = now
        if not metrics:
            return None
        scope = ScopeMetrics(self._scope, metrics, schema_url="")
        return MetricsData([ResourceMetrics(self._resource, [scope], schema_url="")])


def _seconds(millis: str | None, default: float) -> float:
    try:
        value = float(millis) / 1000 if millis else default
    except ValueError:
        return default
    return value if value > 0 else default
