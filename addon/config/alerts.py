"""Spend alerts: the top-level budget's `alerts:` (addon/budget/alerts*.py raise and post them).

    budget:
      daily: 5.00
      alerts:
        thresholds: [50, 80, 100]       # % of each budget an identity is under; once a period
        rate: {times: 5, window: 300, min_spend: 0.10}   # the window's pace vs the hour before
        webhook:
          url: https://hooks.example.com/keyrelay
          secret: {env: KEYRELAY_ALERT_SECRET}   # HMAC-SHA256 of the body, in a header
          timeout: 5                    # seconds per attempt
          retries: 3                    # after the first attempt, 1 s, 2 s, 4 s... apart
          queue: 1000                   # alerts waiting to be posted; more are dropped, logged

Every alert is logged; with `webhook:` it is also posted. A provider's `budget:` has no alerts.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StrictInt, model_validator

from addon.config.budget import BudgetSpec, some_budget
from addon.config.model import Number, Positive, Text, Whole, fail, section
from addon.config.secret_ref import SecretRef

DEFAULT_THRESHOLDS = (50, 80, 100)
MINUTE = 60
HOUR = 3600


def _whole_minutes(seconds: int) -> int:
    if seconds % MINUTE:
        fail("must be a whole number of minutes, in seconds (60, 300, 600...)")
    return seconds


@section
class RateSpec:
    times: Annotated[Number, Field(gt=1)]  # the window's pace, as a multiple of the hour's
    # seconds, a whole number of minutes
    window: Annotated[StrictInt, Field(ge=MINUTE, le=HOUR // 2), AfterValidator(_whole_minutes)] = (
        300
    )
    min_spend: Number = 0.10  # USD the window must reach before it can alarm


def _web_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("must be an http:// or https:// URL")
    if parts.username or parts.password:
        fail("must not hold a user or password (the secret signs the body)")
    return url


@section
class WebhookSpec:
    url: Annotated[Text, AfterValidator(_web_url)]
    secret: SecretRef
    timeout: Positive = 5  # seconds per attempt
    retries: Whole = 3  # attempts after the first
    queue: Positive = 1000  # alerts waiting to be posted


Percent = Annotated[StrictInt, Field(ge=1, le=1000)]


@section
class AlertsSpec:
    thresholds: tuple[Percent, ...] = DEFAULT_THRESHOLDS  # percent, ascending
    rate: RateSpec | None = None
    webhook: WebhookSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_written(cls, raw: Any) -> Any:
        """With `rate:` and no `thresholds:`, the rate alarm alone."""
        if isinstance(raw, dict) and "thresholds" not in raw and raw.get("rate") is not None:
            return {**raw, "thresholds": []}
        return raw

    def __post_init__(self) -> None:
        if len(set(self.thresholds)) != len(self.thresholds):
            fail("names a percentage twice", "thresholds")
        if not self.thresholds and self.rate is None:
            fail("needs thresholds or rate")
        object.__setattr__(self, "thresholds", tuple(sorted(self.thresholds)))


@section
class TopBudget(BudgetSpec):
    """The top-level `budget:`: a provider's share and its own alerts."""

    alerts: AlertsSpec | None = None


# As rules.yaml writes it: a budget names at least one period.
TopBudgetIn = Annotated[TopBudget, AfterValidator(some_budget)]
