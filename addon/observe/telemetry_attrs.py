"""A finished call as OpenTelemetry sees it: the access log's entry as GenAI semantic
convention attributes and measurements. Pure: no mitmproxy, no OpenTelemetry import.

Only facts keyrelay already logs go out: never a body (prompt or completion), a query, a
header, a key or a client credential. Names follow the GenAI conventions (gen_ai.*, semconv
1.37+); what they have no name for is `keyrelay.*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from addon.observe.accesslog import Entry

# What is switched on: an endpoint, or `otlp` asked for by name. OTEL_SDK_DISABLED wins.
ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
EXPORTERS = {"traces": "OTEL_TRACES_EXPORTER", "metrics": "OTEL_METRICS_EXPORTER"}
SUPPORTED = ("otlp", "none")

# The profile's call names that the conventions name (gen_ai.operation.name); any other call
# keeps the profile's own name (`tts`, `request`), as the conventions allow.
OPERATIONS = {
    "messages.create": "chat",
    "chat.create": "chat",
    "responses.create": "chat",
    "generate": "generate_content",
    "generate.stream": "generate_content",
    "embeddings": "embeddings",
    "completions": "text_completion",
}
# gen_ai.provider.name's well-known values, by profile; another profile is its own name.
PROVIDERS = {"gemini": "gcp.gemini"}
# keyrelay's usage units (addon/metering/usage.py) that the conventions name; its input_tokens
# leave out the cached ones, which the conventions' count holds (see `tokens`).
USAGE = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_input_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_creation_input_tokens": "gen_ai.usage.cache_creation.input_tokens",
}

Attributes = dict[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Call:
    """What a span needs beyond the access log's entry, from the same flow."""

    operation: str | None = None  # the profile's name of the call (`messages.create`)
    profile: str | None = None  # the provider's profile (`anthropic`)
    request_model: str | None = None  # the model the request asked for
    first_chunk_ms: float | None = None  # a streamed answer's first chunk, from arrival


@dataclass(frozen=True, slots=True)
class Settings:
    """Which signals to export, from the standard variables; both off: nothing starts."""

    traces: bool = False
    metrics: bool = False
    problems: tuple[str, ...] = ()  # variables with a value keyrelay does not export to

    @property
    def on(self) -> bool:
        return self.traces or self.metrics


def settings(environ: Mapping[str, str]) -> Settings:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Settings()
    chosen = {signal: environ.get(var, "").strip().lower() for signal, var in EXPORTERS.items()}
    endpoint = any(environ.get(var, "").strip() for var in ENDPOINTS)
    problems = tuple(
        f"{EXPORTERS[signal]}={value!r}: keyrelay exports by otlp (OTLP/HTTP) or none"
        for signal, value in chosen.items()
        if value and value not in SUPPORTED
    )
    asked = endpoint or "otlp" in chosen.values()

    def wanted(signal: str) -> bool:
        value = chosen[signal]
        return asked and (value == "otlp" or (not value and endpoint))

    return Settings(wanted("traces"), wanted("metrics"), problems)


def operation(call: Call) -> str:
    name = call.operation or "request"
    return OPERATIONS.get(name, name)


def provider(entry: Entry, call: Call) -> str:
    profile = call.profile or entry.provider or "unknown"
    return PROVIDERS.get(profile, profile)


def response_model(entry: Entry) -> str | None:
    """The model keyrelay priced an answer as: the one the answer named, else the request's."""
    if entry.decision not in ("forwarded", "replayed") or entry.model in (None, "-"):
        return None
    return entry.model


def error_type(entry: Entry) -> str | None:
    """gen_ai's error.type: the refusal, a failed exchange, or the status of an error answer."""
    if entry.refusal:
        return entry.refusal
    if entry.decision == "error" or entry.status is None:
        return "keyrelay.transport"  # the upstream unreachable, the client gone (never its text)
    if entry.status >= 400:
        return str(entry.status)
    return None


def span_name(entry: Entry, call: Call) -> str:
    model = call.request_model or response_model(entry)
    return f"{operation(call)} {model}" if model else operation(call)


def attributes(entry: Entry, call: Call) -> Attributes:
    out: Attributes = {
        "gen_ai.operation.name": operation(call),
        "gen_ai.provider.name": provider(entry, call),
        "keyrelay.provider": entry.provider or "-",
        "keyrelay.decision": entry.decision,
        "keyrelay.identity": entry.identity,
        "http.request.method": entry.method,
    }
    if call.request_model:
        out["gen_ai.request.model"] = call.request_model
    if (model := response_model(entry)) is not None:
        out["gen_ai.response.model"] = model
    if entry.host:
        out["server.address"] = entry.host
    if entry.status is not None:
        out["http.response.status_code"] = entry.status
    if (error := error_type(entry)) is not None:
        out["error.type"] = error
    if entry.refusal:
        out["keyrelay.refusal"] = entry.refusal
    for unit, amount in (entry.usage or {}).items():
        name = USAGE.get(unit, f"keyrelay.usage.{unit}")
        out[name] = int(amount) if float(amount).is_integer() else amount
    if "input_tokens" in (entry.usage or {}):  # the conventions' count holds the cached ones
        out["gen_ai.usage.input_tokens"] = dict(tokens(entry))["input"]
    if entry.cost is not None:
        out["keyrelay.cost_usd"] = entry.cost
    if entry.charged:
        out["keyrelay.charged"] = entry.charged
    if call.first_chunk_ms is not None:
        out["gen_ai.response.time_to_first_chunk"] = call.first_chunk_ms / 1000
    if entry.ttfb_ms is not None:
        out["keyrelay.time_to_first_byte_ms"] = round(entry.ttfb_ms, 3)
    return out


def metric_attributes(entry: Entry, call: Call) -> Attributes:
    """The few attributes a metric point carries (low cardinality: no identity, no status)."""
    out: Attributes = {
        "gen_ai.operation.name": operation(call),
        "gen_ai.provider.name": provider(entry, call),
        "keyrelay.decision": entry.decision,
    }
    if call.request_model:
        out["gen_ai.request.model"] = call.request_model
    if (model := response_model(entry)) is not None:
        out["gen_ai.response.model"] = model
    if (error := error_type(entry)) is not None:
        out["error.type"] = error
    return out


def tokens(entry: Entry) -> list[tuple[str, int]]:
    """(gen_ai.token.type, count) for gen_ai.client.token.usage: input counts every input
    token (the cached ones too, as the conventions count them), output the output ones."""
    usage = entry.usage or {}
    out: list[tuple[str, int]] = []
    if "input_tokens" in usage:
        cached = usage.get("cache_read_input_tokens", 0) + usage.get(
            "cache_creation_input_tokens", 0
        )
        out.append(("input", int(usage["input_tokens"] + cached)))
    if "output_tokens" in usage:
        out.append(("output", int(usage["output_tokens"])))
    return out


def traced(entry: Entry) -> bool:
    """A call to a provider, forwarded or refused: not a preflight, an admin endpoint, nor a
    request no provider matched (a scan of the proxy is not a GenAI call)."""
    return entry.provider is not None and entry.decision not in ("preflight", "admin")
