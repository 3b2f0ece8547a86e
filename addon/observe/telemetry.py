"""OpenTelemetry: a span and the GenAI metrics for every call to a provider, from the access
log's own entry (access.py hands it here once the line is written).

Off unless the standard OTEL_* variables ask for it (telemetry_attrs.settings): then the SDK
is not even imported, no thread starts, and `record` is never called. What goes out is what
the access log says, never a body: see telemetry_attrs.py and docs/observing.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from addon.observe import telemetry_attrs
from addon.observe.accesslog import Entry

if TYPE_CHECKING:
    from addon.observe.telemetry_sdk import Exporter

logger = logging.getLogger(__name__)

SHUTDOWN_WAIT = 5.0  # seconds the last spans and metrics may take to go out at exit


class Telemetry:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ  # None: the process's own
        self.exporter: Exporter | None = None
        self._failed = False  # a failing record is logged once, not per request

    def running(self) -> None:
        if self.exporter is not None:
            return
        settings = telemetry_attrs.settings(os.environ if self._environ is None else self._environ)
        for problem in settings.problems:
            logger.error("keyrelay: OpenTelemetry: %s", problem)
        if not settings.on:
            return
        try:
            from addon.observe.telemetry_sdk import Exporter  # only now: the SDK and its threads

            self.exporter = Exporter(traces=settings.traces, metrics=settings.metrics)
        except Exception:
            logger.exception("keyrelay: OpenTelemetry could not start: nothing is exported")
            return
        signals = [
            name for name, on in (("traces", settings.traces), ("metrics", settings.metrics)) if on
        ]
        logger.info("keyrelay: OpenTelemetry: exporting %s by OTLP/HTTP", " and ".join(signals))

    def record(self, entry: Entry, call: telemetry_attrs.Call) -> None:
        exporter = self.exporter
        if exporter is None or not telemetry_attrs.traced(entry):
            return
        try:
            exporter.record(entry, call)
        except Exception:  # telemetry never fails a request
            if not self._failed:
                self._failed = True
                logger.exception("keyrelay: OpenTelemetry: a call was not recorded")

    def done(self) -> None:
        exporter, self.exporter = self.exporter, None
        if exporter is not None:
            exporter.shutdown(SHUTDOWN_WAIT)
