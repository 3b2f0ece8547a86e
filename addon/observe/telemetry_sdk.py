"""The OpenTelemetry SDK, set up from the standard OTEL_* variables, exporting by OTLP/HTTP.

Imported only when those variables ask for it (telemetry.py): a keyrelay without them loads
none of the SDK and starts none of its threads. Each span is recorded once its call is over,
with its real start and end times; the batch span processor and the periodic metric reader
export on their own threads, so a slow or absent collector never holds a request (spans past
the queue's size are dropped, and the exporter logs its failures).
"""

from __future__ import annotations

import threading
import time

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from addon.observe import telemetry_attrs
from addon.observe.accesslog import Entry

SCOPE = "keyrelay"
DEFAULT_SERVICE = "keyrelay"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
# The conventions' advised bucket boundaries.
TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16 ... 67108864
SECONDS_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01, 0.02 ... 81.92


class Exporter:
    def __init__(self, *, traces: bool, metrics: bool) -> None:
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
        self._tracers: TracerProvider | None = None
        self._meters: MeterProvider | None = None
        if traces:
            # Not the process-wide provider: keyrelay's spans are its own, and shut down with it.
            self._tracers = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._tracers.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self._tracer = self._tracers.get_tracer(SCOPE)
        if metrics:
            reader = PeriodicExportingMetricReader(OTLPMetricExporter())
            self._meters = MeterProvider([reader], resource=resource, shutdown_on_exit=False)
            meter = self._meters.get_meter(SCOPE)
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self._duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration",
                explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            )
            self._first_chunk = meter.create_histogram(
                "gen_ai.client.operation.time_to_first_chunk",
                unit="s",
                description="Time to receive the first chunk of a streamed answer",
                explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            )

    def record(self, entry: Entry, call: telemetry_attrs.Call) -> None:
        if self._tracers is not None:
            self._span(entry, call)
        if self._meters is not None:
            self._measure(entry, call)

    def _span(self, entry: Entry, call: telemetry_attrs.Call) -> None:
        start = int(entry.time * 1e9)
        end = start + int((entry.duration_ms or 0.0) * 1e6)
        span = self._tracer.start_span(
            telemetry_attrs.span_name(entry, call),
            context=Context(),  # a root span: nothing of the event loop's context leaks in
            kind=SpanKind.CLIENT,
            attributes=telemetry_attrs.attributes(entry, call),
            start_time=start,
        )
        if telemetry_attrs.error_type(entry) is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    def _measure(self, entry: Entry, call: telemetry_attrs.Call) -> None:
        attributes = telemetry_attrs.metric_attributes(entry, call)
        if entry.duration_ms is not None:
            self._duration.record(entry.duration_ms / 1000, attributes)
        for kind, count in telemetry_attrs.tokens(entry):
            self._tokens.record(count, {**attributes, "gen_ai.token.type": kind})
        if call.first_chunk_ms is not None:
            self._first_chunk.record(call.first_chunk_ms / 1000, attributes)

    def shutdown(self, wait: float) -> None:
        """What is queued goes out, for at most `wait` seconds, spans and metrics side by side:
        a collector that is down must not hold the process's exit (the threads are daemons)."""
        closing = []
        if self._tracers is not None:
            closing.append(threading.Thread(target=self._tracers.shutdown, daemon=True))
        if self._meters is not None:
            meters = self._meters
            closing.append(
                threading.Thread(
                    target=lambda: meters.shutdown(timeout_millis=wait * 1000), daemon=True
                )
            )
        deadline = time.monotonic() + wait
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(max(0.0, deadline - time.monotonic()))
