"""What `GET /_keyrelay/usage` answers: one identity's books for the current day and month, or
(`?top=N`) the identities that spent most."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from addon.budget.books import Period
from addon.config.budget import BudgetSpec
from addon.metering.prices import usd


def report(
    identity: str,
    top: BudgetSpec,
    provider_budgets: dict[str, BudgetSpec],
    current: Sequence[Period],
    books: Sequence[dict[str, int]],
    now: datetime,
) -> dict[str, Any]:
    """`spent`, `reserved`, `budget`, `remaining` at the top are the day's (the month's when
    only a monthly budget is set); `periods` has both, each with its providers."""
    periods: dict[str, dict[str, Any]] = {
        period.name: _period(period, getattr(top, period.name), provider_budgets, fields)
        for period, fields in zip(current, books, strict=True)
    }
    main = "monthly" if top.monthly is not None and top.daily is None else "daily"
    return {"identity": identity, "period": main, **periods[main], "periods": periods}


def _period(
    period: Period, limit: float | None, budgets: dict[str, BudgetSpec], fields: dict[str, int]
) -> dict[str, Any]:
    providers = {}
    for name, spec in budgets.items():
        spent, reserved = fields.get(f"spent:{name}", 0), fields.get(f"reserved:{name}", 0)
        if spent or reserved or getattr(spec, period.name) is not None:
            providers[name] = _figures(spent, reserved, getattr(spec, period.name))
    return {
        **_figures(fields.get("spent", 0), fields.get("reserved", 0), limit),
        "starts_at": _iso(period.start),
        "resets_at": _iso(period.resets),
        "providers": providers,
    }


def _figures(spent: int, reserved: int, limit: float | None) -> dict[str, Any]:
    return {
        "spent": usd(spent),
        "reserved": usd(max(0, reserved)),
        "budget": limit,
        "remaining": None if limit is None else max(0.0, round(limit - usd(spent + reserved), 9)),
    }


def ranking(period: Period, ranked: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """`?top=N`: the period and its identities by spend, most first."""
    return {
        "period": period.name,
        "starts_at": _iso(period.start),
        "resets_at": _iso(period.resets),
        "identities": [{"identity": who, "spent": usd(spent)} for who, spent in ranked],
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
