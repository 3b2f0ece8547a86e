"""The spend alerts the rules ask for, built once per rules load (a live resource: a reload with
the same alerts keeps the running webhook thread, its queue and what was raised)."""

from __future__ import annotations

from addon.budget.alerts_ledger import Ledger, MemoryLedger, RedisLedger
from addon.budget.alerts_watch import AlertWatch
from addon.budget.alerts_webhook import Webhook
from addon.budget.books import PeriodName
from addon.config.alerts import AlertsSpec
from addon.config.limits import BackendSpec
from addon.config.model import ConfigError
from addon.config.rules import Rules
from addon.config.secret_ref import SecretMissing
from addon.resources import Generation


def watch(rules: Rules, live: Generation) -> AlertWatch | None:
    spec = rules.budget.alerts
    if spec is None:
        return None
    secret = None
    if spec.webhook is not None:
        where = (str(rules.source), "budget.alerts.webhook.secret")
        try:
            secret = spec.webhook.secret.read(rules.env).strip()  # a file's last newline: not it
        except SecretMissing as e:  # at load, as any secret the rules name
            raise ConfigError(*where, str(e)) from e
        if not secret:
            raise ConfigError(*where, f"{spec.webhook.secret.describe()} is empty")
    # Alarms on pace are raised once per the budget's shortest period.
    period: PeriodName = "monthly" if rules.budget.daily is None else "daily"
    backend = rules.limits_backend
    return live.get(
        ("budget-alerts", spec, backend, period, secret),
        lambda: AlertWatch(spec, _ledger(backend), _webhook(spec, secret), period),
    )


def _ledger(backend: BackendSpec) -> Ledger:
    if backend.redis is None:
        return MemoryLedger()
    return RedisLedger(backend.redis, prefix=backend.prefix, timeout=backend.timeout)


def _webhook(spec: AlertsSpec, secret: str | None) -> Webhook | None:
    if spec.webhook is None or secret is None:
        return None
    return Webhook(spec.webhook, secret)
