"""Spend alerts without a process: the config, which thresholds a spend has reached, the pace
of spend, the once-per-period ledger and the watch that ties them to the books."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from addon.budget import alerts_setup
from addon.budget.alerts import NANO, SpendRate, alert_key, reached
from addon.budget.alerts_ledger import MemoryLedger
from addon.budget.alerts_watch import AlertWatch
from addon.budget.alerts_webhook import Webhook, signature
from addon.budget.books import GRACE, Account, account_key, periods
from addon.budget.memory import MemoryBooks
from addon.config.alerts import AlertsSpec, RateSpec, WebhookSpec
from addon.config.model import ConfigError
from addon.config.rules import load
from addon.config.secret_ref import SecretRef
from addon.resources import Resources

RULES = """
providers:
  anthropic:
    match: {prefix: /api/anthropic}
    upstream: https://api.anthropic.com
    credential: {header: x-api-key, key: {env: ANTHROPIC_API_KEY}}
"""


def rules_with(tmp_path: Path, budget: str) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + budget)
    return load(path, {})


def error_of(tmp_path: Path, budget: str) -> str:
    with pytest.raises(ConfigError) as info:
        rules_with(tmp_path, budget)
    return str(info.value)


# -- config -------------------------------------------------------------------------------------


def test_alerts_config(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        """
budget:
  daily: 1.0
  alerts:
    thresholds: [100, 50, 80]
    rate: {times: 5, window: 600}
    webhook: {url: "https://hooks.example.com/kr", secret: {env: KR_ALERT_SECRET}, timeout: 2}
""",
    )
    alerts = rules.budget.alerts
    assert alerts.thresholds == (50, 80, 100)
    assert alerts.rate == RateSpec(5.0, 600, 0.10)
    assert alerts.webhook == WebhookSpec(
        "https://hooks.example.com/kr", SecretRef(env="KR_ALERT_SECRET"), timeout=2
    )
    # The default thresholds; no webhook: logged only.
    plain = rules_with(tmp_path, "budget: {daily: 1.0, alerts: {}}\n").budget.alerts
    assert plain == AlertsSpec((50, 80, 100))


@pytest.mark.parametrize(
    ("budget", "error"),
    [
        (
            "budget: {daily: 1, alerts: {thresholds: [50, 150.5]}}",
            "budget.alerts.thresholds[1]: must be a whole number",
        ),
        (
            "budget: {daily: 1, alerts: {thresholds: [0]}}",
            "budget.alerts.thresholds[0]: must be at least 1",
        ),
        (
            "budget: {daily: 1, alerts: {thresholds: [50, 50]}}",
            "budget.alerts.thresholds: names a percentage twice",
        ),
        (
            "budget: {daily: 1, alerts: {thresholds: [], rate: null}}",
            "budget.alerts: needs thresholds or rate",
        ),
        (
            "budget: {daily: 1, alerts: {rate: {times: 1}}}",
            "budget.alerts.rate.times: must be more than 1",
        ),
        (
            "budget: {daily: 1, alerts: {rate: {times: 3, window: 90}}}",
            "budget.alerts.rate.window: must be a whole number of minutes",
        ),
        (
            "budget: {daily: 1, alerts: {webhook: {url: 'ftp://x', secret: {env: S}}}}",
            "budget.alerts.webhook.url: must be an http:// or https:// URL",
        ),
        (
            "budget: {daily: 1, alerts: {webhook: {url: 'https://h.example'}}}",
            "budget.alerts.webhook.secret: is required",
        ),
        (
            "budget: {daily: 1, alerts: {thresholds: [50], tresholds: [1]}}",
            "budget.alerts.tresholds: unknown key",
        ),
    ],
)
def test_alerts_config_errors_are_located(tmp_path: Path, budget: str, error: str) -> None:
    assert error in error_of(tmp_path, budget + "\n")


def test_a_providers_budget_has_no_alerts(tmp_path: Path) -> None:
    text = RULES + "    budget: {daily: 1, alerts: {}}\n"
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"providers\.anthropic\.budget\.alerts: unknown key"):
        load(path, {})


# -- thresholds ---------------------------------------------------------------------------------


def test_thresholds_reached_exactly_at_their_share() -> None:
    limit = 1 * NANO
    assert reached(0, limit, (50, 80, 100)) == ()
    assert reached(limit // 2 - 1, limit, (50, 80, 100)) == ()
    assert reached(limit // 2, limit, (50, 80, 100)) == (50,)
    assert reached(799_999_999, limit, (50, 80, 100)) == (50,)
    assert reached(800_000_000, limit, (50, 80, 100)) == (50, 80)
    assert reached(3 * limit, limit, (50, 80, 100)) == (50, 80, 100)  # a jump: all of them
    assert reached(10, 0, (50,)) == ()


# -- pace ---------------------------------------------------------------------------------------


def test_spend_rate_compares_the_window_with_the_hour_before() -> None:
    pace = SpendRate(RateSpec(times=5, window=300, min_spend=0.10))
    start = 1_800_000_000.0 // 60 * 60
    cent = NANO // 100
    # An hour at a cent a minute: 60 cents; the window's pace is the hour's.
    for minute in range(65):
        window, hour = pace.add("a", cent, start + minute * 60)
    assert (window, hour) == (5 * cent, 60 * cent)
    assert not pace.fast(window, hour)
    # 5x the hour's pace in the window: 5 cents a minute for five minutes -> 25 cents vs 60/12.
    # (the hour before the window now holds the cents at a cent a minute)
    t = start + 65 * 60
    for minute in range(5):
        window, hour = pace.add("a", 5 * cent, t + minute * 60)
    assert window == 25 * cent and hour == 60 * cent
    assert pace.fast(window, hour)  # 25 / 5 min = 5 c/min >= 5 x 60 / 60 min
    assert not pace.fast(window - 1, hour)
    # Another identity is apart; a new spender is fast once it spent the minimum.
    assert pace.add("b", 5 * cent, t) == (5 * cent, 0)
    assert not pace.fast(5 * cent, 0)  # under min_spend (10 cents)
    assert pace.fast(10 * cent, 0)
    # An hour and a window later, the idle are forgotten.
    pace.sweep(t + 2 * 3600)
    assert pace.add("a", 1, t + 2 * 3600) == (1, 0)


# -- ledger -------------------------------------------------------------------------------------


def test_the_memory_ledger_lets_one_claim_through_per_period() -> None:
    now = [1000.0]
    ledger = MemoryLedger(clock=lambda: now[0])

    async def run() -> list[bool]:
        return [await ledger.claim("k", 60), await ledger.claim("k", 60)]

    assert asyncio.run(run()) == [True, False]
    assert ledger.taken("k")
    now[0] += 61  # its period ended
    assert not ledger.taken("k")
    assert asyncio.run(run()) == [True, False]


# -- the watch over the books -------------------------------------------------------------------


class Posted:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self.closes = 0

    def post(self, alert_id: str, payload: dict[str, Any]) -> bool:
        self.alerts.append((alert_id, payload))
        return True

    def stop(self) -> None:
        self.closes += 1

    def join(self) -> None:
        pass


def test_the_watch_raises_each_threshold_once_per_period() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()
    clock = lambda: now  # noqa: E731
    books = MemoryBooks(clock=clock)
    posted = Posted()
    spec = AlertsSpec((50, 80, 100))
    watch = AlertWatch(spec, MemoryLedger(clock=clock), posted, "daily", clock=clock)  # type: ignore[arg-type]
    when = datetime.fromtimestamp(now, UTC)
    accounts = tuple(
        Account(
            account_key("token:alice", period),
            period.seconds_left(when) + GRACE,
            NANO if period.name == "daily" else None,  # $1 a day
            NANO // 2 if period.name == "daily" else None,  # $0.50 of it on anthropic
            "token:alice",
            period.ident,
        )
        for period in periods(when)
    )

    async def charge(usd_cents: int) -> list[str]:
        amount = usd_cents * NANO // 100
        await books.settle(accounts, "anthropic", None, amount)
        before = len(posted.alerts)
        await watch.settled(books, "token:alice", "anthropic", accounts, amount)
        return [a["id"].rpartition(":d20261207:")[2] for _, a in posted.alerts[before:]]

    async def run() -> list[list[str]]:
        return [await charge(c) for c in (20, 10, 15, 5, 40, 30, 10)]

    steps = asyncio.run(run())
    assert steps == [
        [],  # 20 c
        ["t50:anthropic"],  # 30 c: half the provider's share
        ["t80:anthropic"],  # 45 c
        ["t50", "t100:anthropic"],  # 50 c: half the day, all the share
        ["t80"],  # 90 c
        ["t100"],  # 120 c
        [],  # all raised this period
    ]
    first = posted.alerts[0][1]
    assert first["type"] == "budget-threshold" and first["identity"] == "token:alice"
    assert first["threshold"] == 50 and first["provider"] == "anthropic"
    assert first["budget"] == 0.5 and first["spent"] == 0.3
    assert first["period"] == "daily" and first["resets_at"] == "2026-12-08T00:00:00Z"
    assert posted.alerts[0][0] == alert_key("token:alice", "d20261207", "t50", "anthropic")


def test_the_webhook_signs_its_body(tmp_path: Path) -> None:
    body = b'{"type":"budget-threshold"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == "sha256=" + expected


def test_a_stopped_webhook_takes_no_more_alerts(caplog: pytest.LogCaptureFixture) -> None:
    """After `stop` (keyrelay closing), an alert is dropped with a log line, and no thread is
    started for it; `join` then has nothing to wait for or report."""
    hook = Webhook(WebhookSpec("http://127.0.0.1:9/", SecretRef(env="X")), "s")
    hook.stop()
    hook.stop()  # twice: the same
    assert not hook.post("a", {})
    assert "the webhook is closing; dropped a" in caplog.text
    assert hook._thread is None
    hook.join()
    assert "not posted" not in caplog.text


def test_the_watch_closes_its_webhook_once() -> None:
    """Budget.done closes the watch at shutdown, and the resources again as they stop."""
    posted = Posted()
    watch = AlertWatch(AlertsSpec((50,)), MemoryLedger(), posted, "daily")  # type: ignore[arg-type]

    async def run() -> None:
        await watch.close()
        await watch.close()

    asyncio.run(run())
    assert posted.closes == 1


def test_a_webhook_secret_that_is_not_set_stops_the_load(tmp_path: Path) -> None:
    budget = """
budget:
  daily: 1.0
  alerts: {webhook: {url: "https://hooks.example.com/kr", secret: {env: KR_ALERT_SECRET}}}
"""
    rules = rules_with(tmp_path, budget)
    with Resources().reload() as live, pytest.raises(ConfigError) as info:
        alerts_setup.watch(rules, live)
    assert str(info.value).endswith(
        "rules.yaml: budget.alerts.webhook.secret: environment variable KR_ALERT_SECRET is not set"
    )
    (tmp_path / ".env").write_text("KR_ALERT_SECRET=s3cret\n")  # the .env beside the rules
    with Resources().reload() as live:
        watch = alerts_setup.watch(rules_with(tmp_path, budget), live)
    assert watch is not None and watch.webhook is not None
    assert watch.webhook._secret == "s3cret"  # the line's newline is not part of it
