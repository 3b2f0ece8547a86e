"""A local OTLP/HTTP receiver (a collector's front door) on 127.0.0.1: it takes the protobuf
bodies the OpenTelemetry exporters POST to /v1/traces and /v1/metrics, decodes them with
`opentelemetry-proto`, and keeps both the raw bodies (to grep for secrets) and the decoded
spans and metric points."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from .lifecycle import StartStop


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class Span:
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class Point:
    """One histogram data point of one metric."""

    metric: str
    unit: str
    count: int
    sum: float
    attributes: dict[str, Any]


@dataclass
class Received:
    bodies: list[bytes] = field(default_factory=list)  # as they arrived (decompressed)
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


class OtlpReceiver(StartStop):
    def __init__(self) -> None:
        self.received = Received()
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.status = 200  # what every export is answered with (500: a collector failing)

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                answer = receiver._take(self.path, body)
                self.send_response(receiver.status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _take(self, path: str, body: bytes) -> bytes:
        with self._lock:
            self.received.bodies.append(body)
            self.received.paths.append(path)
            if path == "/v1/traces":
                self._spans(body)
                answer = ExportTraceServiceResponse().SerializeToString()
            elif path == "/v1/metrics":
                self._points(body)
                answer = ExportMetricsServiceResponse().SerializeToString()
            else:
                answer = b""
            self._lock.notify_all()
        return answer

    def _spans(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.received.spans.append(
                        Span(
                            s.name,
                            s.kind,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            s.status.code,
                            attributes(s.attributes),
                            resource,
                        )
                    )

    def _points(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.WhichOneof("data") != "histogram":
                        continue
                    for p in m.histogram.data_points:
                        self.received.points.append(
                            Point(m.name, m.unit, p.count, p.sum, attributes(p.attributes))
                        )

    def wait_for(self, check: Callable[[Received], bool], timeout: float = 15.0) -> Received:
        """Until `check` holds for what has arrived (or fail, saying what did)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not check(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [s.name for s in self.received.spans]
                    metrics = sorted({p.metric for p in self.received.points})
                    raise AssertionError(f"not received in {timeout}s: spans {names}, {metrics}")
                self._lock.wait(left)
            return self.received

    def spans_where(self, **wanted: Any) -> list[Span]:
        with self._lock:
            return [
                s
                for s in self.received.spans
                if all(s.attributes.get(k) == v for k, v in wanted.items())
            ]
