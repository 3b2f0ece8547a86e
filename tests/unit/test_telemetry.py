"""OpenTelemetry: which variables switch it on, what a call's span and metrics say (and
never say), keyrelay's own time for Server-Timing, and that nothing starts without OTEL_*."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from dataclasses import replace

import pytest
from mitmproxy.test import taddons, tflow
from support.repo import RULES

from addon import flowstate
from addon.observe import telemetry_attrs
from addon.observe.accesslog import Entry
from addon.observe.server_timing import keyrelay_ms
from addon.observe.telemetry import Telemetry
from addon.observe.telemetry_attrs import Call, Settings, settings
from addon.relay import KeyRelay

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}

FORWARDED = Entry(
    time=1_700_000_000.0,
    identity="token:alice",
    provider="claude",
    method="POST",
    host="api.anthropic.com",
    path="/v1/messages",
    status=200,
    bytes_in=120,
    bytes_out=800,
    duration_ms=1500.0,
    ttfb_ms=300.0,
    decision="forwarded",
    usage={"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 7},
    cost=0.000123,
    model="claude-sonnet-4-5-20250929",
)
CALL = Call(
    operation="messages.create",
    profile="anthropic",
    request_model="claude-sonnet-4-5",
    first_chunk_ms=400.0,
)


# -- which variables switch it on -------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "keyrelay"},  # a name is not a destination
        {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"},
        {**ENDPOINT, "OTEL_SDK_DISABLED": "true"},
        {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_without_a_destination_nothing_is_exported(environ: dict[str, str]) -> None:
    assert not settings(environ).on


def test_an_endpoint_exports_traces_and_metrics() -> None:
    assert settings(ENDPOINT) == Settings(traces=True, metrics=True)
    assert settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"}).traces


def test_each_signal_can_be_switched_off_or_asked_for_by_name() -> None:
    only_traces = settings({**ENDPOINT, "OTEL_METRICS_EXPORTER": "none"})
    assert (only_traces.traces, only_traces.metrics) == (True, False)
    # `otlp` by name, no endpoint: the SDK's default endpoint (localhost:4318).
    only_metrics = settings({"OTEL_METRICS_EXPORTER": "otlp"})
    assert (only_metrics.traces, only_metrics.metrics) == (False, True)


def test_an_exporter_keyrelay_lacks_is_named_and_not_used() -> None:
    chosen = settings({**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin"})
    assert not chosen.traces and chosen.metrics
    assert chosen.problems == (
        "OTEL_TRACES_EXPORTER='zipkin': keyrelay exports by otlp (OTLP/HTTP) or none",
    )


# -- what a span says -------------------------------------------------------------------------


def test_a_forwarded_call_is_a_genai_span() -> None:
    assert telemetry_attrs.span_name(FORWARDED, CALL) == "chat claude-sonnet-4-5"
    assert telemetry_attrs.attributes(FORWARDED, CALL) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 17,  # the conventions count the cached ones in
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.cache_read.input_tokens": 7,
        "gen_ai.response.time_to_first_chunk": 0.4,
        "keyrelay.provider": "claude",
        "keyrelay.decision": "forwarded",
        "keyrelay.identity": "token:alice",
        "keyrelay.cost_usd": 0.000123,
        "keyrelay.time_to_first_byte_ms": 300.0,
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "server.address": "api.anthropic.com",
    }


def test_units_the_conventions_do_not_name_are_keyrelays() -> None:
    speech = replace(FORWARDED, provider="elevenlabs", usage={"characters": 42}, model="-")
    call = Call(operation="tts", profile="elevenlabs")
    attributes = telemetry_attrs.attributes(speech, call)
    assert attributes["gen_ai.operation.name"] == "tts"
    assert attributes["gen_ai.provider.name"] == "elevenlabs"
    assert attributes["keyrelay.usage.characters"] == 42
    assert "gen_ai.response.model" not in attributes  # "-": none known
    assert telemetry_attrs.tokens(speech) == []  # no token metric for characters
    gemini = Call(operation="generate", profile="gemini", request_model="gemini-2.5-flash")
    assert telemetry_attrs.operation(gemini) == "generate_content"
    assert telemetry_attrs.provider(FORWARDED, gemini) == "gcp.gemini"


def test_a_refusal_is_a_span_with_its_reason_and_an_error() -> None:
    refused = replace(
        FORWARDED,
        host=None,
        status=429,
        decision="refused",
        refusal="budget-exhausted",
        detail="the daily budget is spent",
        usage=None,
        cost=None,
        ttfb_ms=None,
    )
    attributes = telemetry_attrs.attributes(refused, replace(CALL, first_chunk_ms=None))
    assert attributes["keyrelay.decision"] == "refused"
    assert attributes["keyrelay.refusal"] == "budget-exhausted"
    assert attributes["error.type"] == "budget-exhausted"
    assert "gen_ai.response.model" not in attributes  # nothing answered
    assert not any("detail" in name for name in attributes)  # it may quote what a client sent
    assert telemetry_attrs.traced(refused)


def test_a_failed_exchange_never_exports_its_error_text() -> None:
    failed = replace(FORWARDED, status=None, decision="error", error="connect to 10.0.0.1 failed")
    attributes = telemetry_attrs.attributes(failed, CALL)
    assert attributes["error.type"] == "keyrelay.transport"
    assert "connect to" not in repr(attributes)
    upstream_error = replace(FORWARDED, status=503)
    assert telemetry_attrs.error_type(upstream_error) == "503"


def test_only_calls_to_a_provider_are_traced() -> None:
    assert not telemetry_attrs.traced(replace(FORWARDED, decision="admin"))
    assert not telemetry_attrs.traced(replace(FORWARDED, decision="preflight"))
    assert not telemetry_attrs.traced(replace(FORWARDED, provider=None, decision="refused"))


def test_metrics_carry_few_attributes_and_tokens_by_type() -> None:
    attributes = telemetry_attrs.metric_attributes(FORWARDED, CALL)
    assert "keyrelay.identity" not in attributes  # one series per caller would not scale
    assert attributes["gen_ai.operation.name"] == "chat"
    assert telemetry_attrs.tokens(FORWARDED) == [("input", 17), ("output", 20)]


# -- Server-Timing: keyrelay's own time ---------------------------------------------------------


def test_keyrelay_time_leaves_out_the_upstream_and_the_clients_upload() -> None:
    # Arrived at 0, decided at 0.010, the body in at 0.510, sent at 0.515, the upstream's
    # answer at 2.515, out at 2.520: keyrelay's own 10 + 5 + 5 ms.
    ms = keyrelay_ms(0.0, 0.010, 0.510, 0.515, 2.515, 2.520)
    assert ms == pytest.approx(20.0)


def test_a_streamed_upload_is_the_upstreams_time() -> None:
    ms = keyrelay_ms(0.0, 0.010, 0.900, 0.010, 1.010, 1.015, streamed=True)
    assert ms == pytest.approx(15.0)


def test_an_answer_keyrelay_gave_itself_is_all_its_own() -> None:
    assert keyrelay_ms(0.0, 0.002, None, None, None, 0.003) == pytest.approx(3.0)


# -- off: nothing starts ----------------------------------------------------------------------


def test_without_otel_variables_nothing_is_imported_or_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.delitem(sys.modules, "addon.observe.telemetry_sdk", raising=False)
    threads = set(threading.enumerate())

    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context(relay) as tctx:
            tctx.configure(relay, keyrelay_rules=str(RULES))
            relay.telemetry.running()
            flow = tflow.tflow(resp=True)
            relay.access.requestheaders(flow)
            flowstate.of(flow).update(provider="anthropic", decision="forwarded")
            relay.access.response(flow)
            assert relay.telemetry.exporter is None
            relay.telemetry.done()

    asyncio.run(scenario())
    assert "addon.observe.telemetry_sdk" not in sys.modules  # the SDK was never imported
    assert not [t.name for t in set(threading.enumerate()) - threads if t.is_alive()]


def test_a_recording_that_fails_never_reaches_the_request() -> None:
    class Broken:
        def record(self, *_: object) -> None:
            raise RuntimeError("collector gone")

    telemetry = Telemetry({})
    telemetry.exporter = Broken()  # type: ignore[assignment]
    telemetry.record(FORWARDED, CALL)  # logged once, never raised
    telemetry.record(FORWARDED, CALL)
