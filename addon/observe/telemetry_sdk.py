"""The OpenTelemetry SDK, set up from the standard OTEL_* variables, exporting by OTLP/HTTP.

Imported only when those variables ask for it (telemetry.py): a keyrelay without them loads
none of the SDK and starts none of its threads. Each span is recorded once its call is over,
with its real start and end times; the batch span processor and the metrics' thread
(telemetry_metrics.py) export on their own threads, so a slow or absent collector never holds a
request (spans past the queue's size are dropped, and the exporters log their failures).
"""

from __future__ import annotations

import threading
import time
from importlib import metadata

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from addon.observe import telemetry_attrs
from addon.observe.accesslog import Entry
from addon.observe.telemetry_metrics import Histograms, Instrument

SCOPE = "keyrelay"
DEFAULT_SERVICE = "keyrelay"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
# The conventions' advised bucket boundaries.
SECONDS_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02 ... 81.92
TOKENS = Instrument(
    "gen_ai.client.token.usage",
    "{token}",
    "Number of input and output tokens used",
    tuple(4.0**i for i in range(14)),  # 1, 4, 16 ... 67108864
)
DURATION = Instrument(
    "gen_ai.client.operation.duration", "s", "GenAI operation duration", SECONDS_BUCKETS
)
FIRST_CHUNK = Instrument(
    "gen_ai.client.operation.time_to_first_chunk",
    "s",
    "Time to receive the first chunk of a streamed answer",
    SECONDS_BUCKETS,
)
INSTRUMENTS = (TOKENS, DURATION, FIRST_CHUNK)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class Exporter:
    def __init__(self, *, traces: bool, metrics: bool) -> None:
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
        self._resource = resource
        self._scope = InstrumentationScope(SCOPE, _version())
        self._spans: BatchSpanProcessor | None = None
        if traces:
            # The provider only for what OTEL_TRACES_SAMPLER chose and its ids: a finished call
            # is handed to the batch processor as a finished span, not started and ended
            # through the tracer (three times the work on the request's thread).
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._sampler, self._ids = provider.sampler, provider.id_generator
            self._spans = BatchSpanProcessor(OTLPSpanExporter())
        self._meters = Histograms(INSTRUMENTS, resource, SCOPE, _version()) if metrics else None

    def record(self, entry: Entry, call: telemetry_attrs.Call) -> None:
        if self._spans is not None:
            self._span(self._spans, entry, call)
        if self._meters is not None:
            self._measure(self._meters, entry, call)

    def _span(self, spans: BatchSpanProcessor, entry: Entry, call: telemetry_attrs.Call) -> None:
        name = telemetry_attrs.span_name(entry, call)
        attributes = telemetry_attrs.attributes(entry, call)
        trace_id = self._ids.generate_trace_id()  # a root span: keyrelay has no parent for it
        sampled = self._sampler.should_sample(None, trace_id, name, SpanKind.CLIENT, attributes)
        if not sampled.decision.is_sampled():
            return
        if sampled.attributes:
            attributes.update(sampled.attributes)
        start = int(entry.time * 1e9)
        context = SpanContext(
            trace_id, self._ids.generate_span_id(), False, _SAMPLED, sampled.trace_state
        )
        error = telemetry_attrs.error_type(entry) is not None
        span = ReadableSpan(
            name=name,
            context=context,
            resource=self._resource,
            attributes=attributes,
            kind=SpanKind.CLIENT,
            instrumentation_scope=self._scope,
            status=Status(StatusCode.ERROR if error else StatusCode.UNSET),
            start_time=start,
            end_time=start + int((entry.duration_ms or 0.0) * 1e6),
        )
        spans.on_end(span)  # queued; exported from the processor's thread

    def _measure(self, meters: Histograms, entry: Entry, call: telemetry_attrs.Call) -> None:
        record = meters.record
        attributes = telemetry_attrs.metric_attributes(entry, call)
        if entry.duration_ms is not None:
            record(DURATION.name, entry.duration_ms / 1000, attributes)
        for kind, count in telemetry_attrs.tokens(entry):
            record(TOKENS.name, count, {**attributes, "gen_ai.token.type": kind})
        if call.first_chunk_ms is not None:
            record(FIRST_CHUNK.name, call.first_chunk_ms / 1000, attributes)

    def shutdown(self, wait: float) -> None:
        """What is queued goes out, for at most `wait` seconds, spans and metrics side by side:
        a collector that is down must not hold the process's exit (the threads are daemons)."""
        closing = []
        if self._spans is not None:
            closing.append(threading.Thread(target=self._spans.shutdown, daemon=True))
        if self._meters is not None:
            closing.append(threading.Thread(target=self._meters.shutdown, daemon=True))
        deadline = time.monotonic() + wait
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(max(0.0, deadline - time.monotonic()))


def _version() -> str:
    try:
        return metadata.version("keyrelay")
    except metadata.PackageNotFoundError:
        return "0"
