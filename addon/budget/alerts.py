"""Spend alerts, as values: which thresholds of a budget an identity's spend has reached, and
whether it spends faster than its trailing hour. Pure: no I/O, no clock of its own.

An alert is raised at most once per identity, per threshold (or the rate alarm), per budget
period: its `key` says which, and the ledger (alerts_ledger.py) lets one claim of a key
through per period, across instances sharing Redis. What the webhook receives is `payload`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from addon.budget.books import Period, who
from addon.config.alerts import HOUR, MINUTE, RateSpec

NANO = 1_000_000_000  # nano-dollars per USD (metering/prices.py's unit)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Literal["budget-threshold", "spend-rate"]
    identity: str
    period: Period  # the budget period it is raised once in
    spent: int  # nano-dollars: in the period (a threshold), in the window (the rate)
    threshold: int | None = None  # percent
    budget: int | None = None  # nano-dollars: the limit the threshold is of
    provider: str | None = None  # a provider's own share of the budget; None: all providers
    baseline: int | None = None  # nano-dollars spent in the hour before the window (the rate)
    rate: RateSpec | None = None

    @property
    def key(self) -> str:
        which = f"t{self.threshold}" if self.kind == "budget-threshold" else "rate"
        return alert_key(self.identity, self.period.ident, which, self.provider)

    def payload(self, now: datetime) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.kind,
            "id": self.key,
            "identity": self.identity,
            "period": self.period.name,
            "starts_at": _iso(self.period.start),
            "resets_at": _iso(self.period.resets),
            "time": _iso(now),
        }
        if self.kind == "budget-threshold":
            data.update(
                threshold=self.threshold,
                provider=self.provider,
                budget=usd(self.budget or 0),
                spent=usd(self.spent),
            )
        else:
            assert self.rate is not None
            data.update(
                times=self.rate.times,
                window_seconds=self.rate.window,
                window_spent=usd(self.spent),
                hour_before_spent=usd(self.baseline or 0),
            )
        return data

    def describe(self, identity: str) -> str:
        """The log line's words, naming the identity as given (quoted by the caller)."""
        if self.kind == "budget-threshold":
            share = f" {self.provider} share of the" if self.provider else ""
            return (
                f"{identity} reached {self.threshold}% of its{share} {self.period.name} "
                f"budget (${usd(self.spent):.6f} of ${usd(self.budget or 0):.6f})"
            )
        assert self.rate is not None
        return (
            f"{identity} spent ${usd(self.spent):.6f} in {self.rate.window // MINUTE} min, "
            f"over {self.rate.times:g}x its pace of the hour before "
            f"(${usd(self.baseline or 0):.6f})"
        )


def alert_key(identity: str, period: str, which: str, provider: str | None) -> str:
    """Which alert, for the ledger: whose (hashed, as the books are), which period (its ident,
    `d20261207`), which alert (`t80`, `rate`) and of which budget (a provider's share)."""
    return hashed_key(who(identity), period, which, provider)


def hashed_key(whose: str, period: str, which: str, provider: str | None) -> str:
    """alert_key, given the identity's hash (made once per settlement, not per threshold)."""
    share = f":{provider}" if provider else ""
    return f"{{{whose}}}:{period}:{which}{share}"


def reached(spent: int, limit: int, thresholds: tuple[int, ...]) -> tuple[int, ...]:
    """The thresholds (percent of `limit`) that `spent` has reached, in integers: 50% of a
    limit is reached at exactly half of it, not a nano-dollar later."""
    if limit <= 0:
        return ()
    return tuple(t for t in thresholds if spent * 100 >= t * limit)


def usd(nano: int) -> float:
    return round(nano / NANO, 9)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class SpendRate:
    """Each identity's spend per minute over the last hour and a window, in this process.

    `add` returns what the window (the last `window` seconds) spent and what the hour before
    it spent; `fast` says whether that is an alarm. Identities idle past the hour are forgotten
    (`sweep`), so the memory follows the identities spending now."""

    def __init__(self, spec: RateSpec) -> None:
        self.spec = spec
        self._minutes = spec.window // MINUTE
        self._kept = self._minutes + HOUR // MINUTE  # minutes of history an identity keeps
        self._spend: dict[str, deque[tuple[int, int]]] = {}  # (minute, nano-dollars), oldest first

    def add(self, identity: str, spent: int, now: float) -> tuple[int, int]:
        minute = int(now // MINUTE)
        history = self._spend.setdefault(identity, deque())
        if history and history[-1][0] == minute:
            history[-1] = (minute, history[-1][1] + spent)
        else:
            history.append((minute, spent))
        while history[0][0] <= minute - self._kept:
            history.popleft()
        start = minute - self._minutes  # the window is the minutes after this one
        window = sum(n for m, n in history if m > start)
        hour = sum(n for m, n in history if m <= start)
        return window, hour

    def fast(self, window: int, hour: int) -> bool:
        """The window's pace is at least `times` the hour's (and it spent `min_spend`): an
        identity with no spend in the hour before is faster than any multiple of it."""
        spec = self.spec
        if window < spec.min_spend * NANO or window <= 0:
            return False
        # window / minutes >= times * hour / 60, without dividing
        return window * (HOUR // MINUTE) >= spec.times * hour * self._minutes

    def sweep(self, now: float) -> None:
        oldest = int(now // MINUTE) - self._kept
        self._spend = {k: v for k, v in self._spend.items() if v and v[-1][0] > oldest}
