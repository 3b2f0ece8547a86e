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
from dataclasses import dataclass

from addon.config.alerts import AlertsSpec, parse_alerts
from addon.config.node import Node

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
)


# The rates that can price each meter (config/operations.py's); a meter not listed (free)
# needs none.
METER_RATES = {
    "tokens": ("input", "output"),
    "characters": ("characters",),
    "units": ("unit", "prediction"),  # fal's billable units; an EachLabs prediction
    "images": ("image",),
    "seconds": ("second",),
}


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens (input, output, cache_*), per million characters, per unit."""

    glob: str
    by_endpoint: bool  # `endpoint:` (fal: matched against the upstream path), else `model:`
    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0
    characters: float = 0.0
    unit: float = 0.0
    image: float = 0.0  # per image made (OpenAI images: set the dearest size and quality you allow)
    second: float = 0.0  # per second of audio heard or video made
    search: float = 0.0  # per web search a server tool runs (Anthropic: $10 per 1,000)
    prediction: float = 0.0  # per prediction (EachLabs: the dearest its model makes one for)
    reserve: float = 0.0  # units reserved before a request to a matching endpoint

    def covers(self, meter: str | None) -> bool:
        """Whether it has a rate for what the meter counts: `{model: "*", unit: 0.1}` matched
        by a token-metered call would otherwise price it at 0."""
        rates = METER_RATES.get(meter or "")
        return rates is None or any(getattr(self, rate) for rate in rates)

    def matches(self, model: str | None, endpoint: str) -> bool:
        # A request naming no model (ElevenLabs' default voice model) is matched by "*".
        return fnmatch.fnmatchcase(endpoint if self.by_endpoint else model or "", self.glob)


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    daily: float | None = None  # USD per identity per UTC day
    monthly: float | None = None  # USD per identity per UTC month
    alerts: AlertsSpec | None = None  # the top-level budget's (config/alerts.py)

    @property
    def active(self) -> bool:
        return self.daily is not None or self.monthly is not None


def parse_prices(parent: Node) -> tuple[Price, ...]:
    raw = parent.raw("prices", [])
    if not isinstance(raw, list):
        parent.fail("must be a list of prices", "prices")
    return tuple(
        _price(Node(item, parent.file, parent.key(f"prices[{i}]"))) for i, item in enumerate(raw)
    )


def _price(node: Node) -> Price:
    if ("model" in node) == ("endpoint" in node):
        node.fail("a price names either a model or an endpoint glob")
    by_endpoint = "endpoint" in node
    glob = node.text("endpoint" if by_endpoint else "model")
    rates = {name: node.number(name, None) for name in _RATES}
    if all(v is None for v in rates.values()):
        node.fail(f"names no price: give one of {', '.join(_RATES)}")
    given = {k: v for k, v in rates.items() if v is not None}
    if "input" in given:
        given.setdefault("cache_read", given["input"] * CACHE_READ_FACTOR)
        given.setdefault("cache_write", given["input"] * CACHE_WRITE_FACTOR)
    reserve = node.number("reserve", 0.0)
    if reserve and not by_endpoint:
        node.fail(
            "applies to endpoint prices (tokens and characters are known from the body)", "reserve"
        )
    node.finish()
    return Price(glob, by_endpoint, reserve=reserve, **given)


def parse_budget(parent: Node, *, alerts: bool = False) -> BudgetSpec:
    """`alerts`: the top-level budget, which may have `alerts:` (a provider's may not)."""
    node = parent.child("budget", None)
    if node is None:
        return BudgetSpec()
    spec = BudgetSpec(
        node.number("daily", None),
        node.number("monthly", None),
        parse_alerts(node.child("alerts", None)) if alerts else None,
    )
    if not spec.active:
        node.fail("needs daily or monthly (USD)")
    node.finish()
    return spec
