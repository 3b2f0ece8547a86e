"""Raising spend alerts after a settlement, in the settlement's background task: a request
never waits for them.

After an identity's charge reaches the books, its accounts are read (only while a threshold of
them is still to be reached this period: once all are, nothing more is read), and the pace
of its spend is updated. Each alert found is claimed in the ledger (once per period, across
instances) and, when this instance won the claim, logged and handed to the webhook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from addon.budget.alerts import Alert, SpendRate, hashed_key, reached
from addon.budget.alerts_ledger import Ledger
from addon.budget.alerts_webhook import Webhook
from addon.budget.books import Account, BudgetStore, Period, PeriodName, periods, who
from addon.config.alerts import AlertsSpec
from addon.ratelimit.backend import StoreError
from addon.redis_client import Every

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0
SWEEP_EVERY = 600.0  # seconds between two sweeps of identities whose pace is an hour old


class AlertWatch:
    def __init__(
        self,
        spec: AlertsSpec,
        ledger: Ledger,
        webhook: Webhook | None,
        rate_period: PeriodName,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.ledger = ledger
        self.webhook = webhook
        self._rate_period = rate_period  # the budget's shortest period: the alarm's once-per
        self._pace = SpendRate(spec.rate) if spec.rate else None
        self._clock = clock
        self._next_sweep = clock() + SWEEP_EVERY
        self._log = Every(LOG_EVERY)
        self._current: dict[str, Period] = {}
        self._periods_end = 0.0
        self._closed = False

    async def settled(
        self,
        books: BudgetStore,
        identity: str,
        provider: str,
        accounts: tuple[Account, ...],
        spent: int,
    ) -> None:
        """`spent` nano-dollars were charged to `identity`'s `accounts`: raise what it caused."""
        if spent <= 0:
            return
        now = self._clock()
        whose = who(identity)
        found = await self._thresholds(books, identity, whose, provider, accounts, now)
        if self._pace is not None:
            found += self._rate(identity, whose, spent, now)
        if not found:
            return
        when = datetime.fromtimestamp(now, UTC)
        for alert in found:
            if await self.ledger.claim(alert.key, alert.period.seconds_left(when)):
                self._raise(alert, when)

    def _periods(self, now: float) -> dict[str, Period]:
        """This day's and month's periods by ident, made again when the day ends."""
        if now >= self._periods_end:
            day, month = periods(datetime.fromtimestamp(now, UTC))
            self._current = {day.ident: day, month.ident: month}
            self._periods_end = day.resets.timestamp()
        return self._current

    async def _thresholds(
        self,
        books: BudgetStore,
        identity: str,
        whose: str,
        provider: str,
        accounts: tuple[Account, ...],
        now: float,
    ) -> list[Alert]:
        current = self._periods(now)
        pending = []  # (account, field, limit, share, thresholds not yet raised)
        for account in accounts:
            period = current.get(account.period)
            if period is None:  # settled after its period ended: no alert for a past one
                continue
            for limit, field, share in (
                (account.limit, "spent", None),
                (account.provider_limit, f"spent:{provider}", provider),
            ):
                if limit is None:
                    continue
                left = tuple(
                    t
                    for t in self.spec.thresholds
                    if not self.ledger.taken(hashed_key(whose, period.ident, f"t{t}", share))
                )
                if left:
                    pending.append((account, field, limit, share, left))
        if not pending:
            return []
        keys = tuple(dict.fromkeys(account.key for account, *_ in pending))
        try:
            figures = dict(zip(keys, await books.read(keys), strict=True))
        except StoreError as e:
            if self._log(e.kind):
                logger.error("keyrelay: alerts: the books could not be read (%s)", e)
            return []
        found = []
        for account, field, limit, share, left in pending:
            spent = figures[account.key].get(field, 0)
            for threshold in reached(spent, limit, left):
                found.append(
                    Alert(
                        "budget-threshold",
                        identity,
                        current[account.period],
                        spent,
                        threshold=threshold,
                        budget=limit,
                        provider=share,
                    )
                )
        return found

    def _rate(self, identity: str, whose: str, spent: int, now: float) -> list[Alert]:
        pace = self._pace
        assert pace is not None
        if now >= self._next_sweep:
            pace.sweep(now)
            self._next_sweep = now + SWEEP_EVERY
        window, hour = pace.add(identity, spent, now)
        if not pace.fast(window, hour):
            return []
        period = next(p for p in self._periods(now).values() if p.name == self._rate_period)
        if self.ledger.taken(hashed_key(whose, period.ident, "rate", None)):
            return []
        return [Alert("spend-rate", identity, period, window, baseline=hour, rate=pace.spec)]

    def _raise(self, alert: Alert, when: datetime) -> None:
        # The identity quoted: a client chose it (a JWT's sub), and a log line stays one line.
        who = json.dumps(alert.identity)
        logger.warning("keyrelay: alert: %s: %s", alert.kind, alert.describe(who))
        if self.webhook is not None:
            self.webhook.post(alert.key, alert.payload(when))

    async def close(self) -> None:
        """At shutdown (Budget.done, once the last settlements raised theirs) and when a reload
        drops this watch: what is queued is posted, within the webhook's bound. Twice: once."""
        if self._closed:
            return
        self._closed = True
        if self.webhook is not None:
            self.webhook.stop()
            await asyncio.to_thread(self.webhook.join)  # up to its timeout: not on the loop
        await self.ledger.close()
