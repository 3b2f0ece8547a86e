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

Every alert is logged; with `webhook:` it is also posted.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from addon.config.node import Node
from addon.config.secret_ref import SecretRef, parse_secret

DEFAULT_THRESHOLDS = (50, 80, 100)
MINUTE = 60
HOUR = 3600


@dataclass(frozen=True, slots=True)
class RateSpec:
    times: float  # the window's pace, as a multiple of the trailing hour's
    window: int  # seconds, a whole number of minutes
    min_spend: float  # USD the window must reach before it can alarm


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    url: str
    secret: SecretRef
    timeout: int = 5  # seconds per attempt
    retries: int = 3  # attempts after the first
    queue: int = 1000  # alerts waiting to be posted


@dataclass(frozen=True, slots=True)
class AlertsSpec:
    thresholds: tuple[int, ...] = ()  # percent, ascending
    rate: RateSpec | None = None
    webhook: WebhookSpec | None = None


def parse_alerts(node: Node | None) -> AlertsSpec | None:
    if node is None:
        return None
    thresholds = _thresholds(node)
    rate = _rate(node.child("rate", None))
    webhook = _webhook(node.child("webhook", None))
    node.finish()
    if not thresholds and rate is None:
        node.fail("needs thresholds or rate")
    return AlertsSpec(thresholds, rate, webhook)


def _thresholds(node: Node) -> tuple[int, ...]:
    raw = node.raw("thresholds", list(DEFAULT_THRESHOLDS) if "rate" not in node else [])
    if not isinstance(raw, list):
        node.fail("must be a list of percentages", "thresholds")
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            node.fail("must be a whole percentage from 1 to 1000", f"thresholds[{i}]")
    if len(set(raw)) != len(raw):
        node.fail("names a percentage twice", "thresholds")
    return tuple(sorted(raw))


def _rate(node: Node | None) -> RateSpec | None:
    if node is None:
        return None
    times = node.number("times")
    if times <= 1:
        node.fail("must be more than 1 (faster than the trailing hour)", "times")
    window = node.integer("window", 300, minimum=MINUTE)
    if window % MINUTE or window > HOUR // 2:
        node.fail("must be a whole number of minutes, in seconds, up to 1800", "window")
    min_spend = node.number("min_spend", 0.10)
    node.finish()
    return RateSpec(times, window, min_spend)


def _webhook(node: Node | None) -> WebhookSpec | None:
    if node is None:
        return None
    url = node.text("url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        node.fail("must be an http:// or https:// URL", "url")
    if parts.username or parts.password:
        node.fail("must not hold a user or password (the secret signs the body)", "url")
    spec = WebhookSpec(
        url,
        parse_secret(node, "secret"),
        timeout=node.integer("timeout", 5, minimum=1),
        retries=node.integer("retries", 3),
        queue=node.integer("queue", 1000, minimum=1),
    )
    node.finish()
    return spec
