"""Prices (a provider's `prices:`) and budgets (top-level and a provider's `budget:`).

    budget: {daily: 5.00, monthly: 50.00}           # USD per identity; UTC day, UTC month
    providers:
      anthropic:
        prices:                                     # USD, first match wins
          - {model: "claude-haiku-*", input: 1.0, output: 5.0}   # per million tokens
          - {model: "*", input: 3.0, output: 15.0, cache_read: 0.3, cache_write: 3.75}
        budget: {daily: 2.00}                       # this provider's own share
      elevenlabs:
        prices: [{model: "*", characters: 300.0}]   # per million characters
      fal:
        prices: [{endpoint: "fal-ai/flux/*", unit: 0.025, reserve: 4}]  # per billable unit
      eachlabs:
        prices: [{model: "nano-banana-pro", prediction: 0.15}]   # per prediction made
      openai:
        prices: [{model: "gpt-image-1", image: 0.25}]   # per image made
        # also {model: "sora-2", second: 0.10}, {model: "whisper-1", second: 0.0001}

The metering and the arithmetic are in addon/metering/; the books in addon/budget/.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

from pydantic import AfterValidator, model_validator

from addon.config.model import Number, Text, fail, section

# Anthropic's multipliers of the input price, for a price that names none.
CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25
_RATES = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "characters",
    "unit",
    "image",
    "second",
    "search",
    "prediction",
    "minute",
    "audio_input",
    "audio_output",
    "audio_cache_read",
)


# The rates that can price each meter (config/operations.py's); a meter not listed (free)
# needs none.
METER_RATES = {
    "tokens": ("input", "output"),
    "characters": ("characters",),
    "units": ("unit", "prediction"),  # fal's billable units; an EachLabs prediction
    "images": ("image",),
    "seconds": ("second",),
    "minutes": ("minute",),  # a minted credential: the session it enables, per minute
    "session": ("input", "output", "audio_input", "audio_output"),
}


@section
class Price:
    """USD per million tokens (input, output, cache_*), per million characters, per unit."""

    model: Text | None = None  # a glob matched against the request's model...
    endpoint: Text | None = None  # ...or against the upstream path (fal's endpoints)
    input: Number = 0.0
    output: Number = 0.0
    cache_read: Number = 0.0  # when not given: the input price x CACHE_READ_FACTOR
    cache_write: Number = 0.0  # likewise, x CACHE_WRITE_FACTOR
    characters: Number = 0.0
    unit: Number = 0.0
    image: Number = (
        0.0  # per image made (OpenAI images: set the dearest size and quality you allow)
    )
    second: Number = 0.0  # per second of audio heard or video made
    search: Number = 0.0  # per web search a server tool runs (Anthropic: $10 per 1,000)
    prediction: Number = 0.0  # per prediction (EachLabs: the dearest its model makes one for)
    minute: Number = 0.0  # per minute a minted key may be used (a Realtime session's dearest)
    reserve: Number = 0.0  # units reserved before a request to a matching endpoint
    # Per million audio tokens (OpenAI Realtime); 0: audio costs what text does. A cached audio
    # token with no rate of its own costs a whole audio input token (never under-counted).
    audio_input: Number = 0.0
    audio_output: Number = 0.0
    audio_cache_read: Number = 0.0

    @model_validator(mode="before")
    @classmethod
    def _as_written(cls, raw: Any) -> Any:
        """Checks of the mapping as written: which keys it has, not what they default to."""
        if not isinstance(raw, dict):
            return raw
        if ("model" in raw) == ("endpoint" in raw):
            fail("a price names either a model or an endpoint glob")
        if not any(name in raw for name in _RATES):
            fail(f"names no price: give one of {', '.join(_RATES)}")
        if raw.get("reserve") and "model" in raw:
            fail(
                "applies to endpoint prices (tokens and characters are known from the body)",
                "reserve",
            )
        if isinstance(raw.get("input"), int | float):
            raw = {**raw}
            raw.setdefault("cache_read", raw["input"] * CACHE_READ_FACTOR)
            raw.setdefault("cache_write", raw["input"] * CACHE_WRITE_FACTOR)
        if isinstance(raw.get("audio_input"), int | float):
            raw = {**raw}
            raw.setdefault("audio_cache_read", raw["audio_input"])
        return raw

    @property
    def glob(self) -> str:
        return self.endpoint if self.endpoint is not None else self.model or ""

    @property
    def by_endpoint(self) -> bool:
        return self.endpoint is not None

    def covers(self, meter: str | None) -> bool:
        """Whether it has a rate for what the meter counts: `{model: "*", unit: 0.1}` matched
        by a token-metered call would otherwise price it at 0."""
        rates = METER_RATES.get(meter or "")
        return rates is None or any(getattr(self, rate) for rate in rates)

    def matches(self, model: str | None, endpoint: str) -> bool:
        # A request naming no model (ElevenLabs' default voice model) is matched by "*".
        return fnmatch.fnmatchcase(endpoint if self.by_endpoint else model or "", self.glob)


@section
class BudgetSpec:
    daily: Number | None = None  # USD per identity per UTC day
    monthly: Number | None = None  # USD per identity per UTC month

    @property
    def active(self) -> bool:
        return self.daily is not None or self.monthly is not None


def some_budget(spec: BudgetSpec) -> BudgetSpec:
    if not spec.active:
        fail("needs daily or monthly (USD)")
    return spec


# As rules.yaml writes them: a budget names at least one period.
Budget = Annotated[BudgetSpec, AfterValidator(some_budget)]
