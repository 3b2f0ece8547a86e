"""The books one identity keeps per period, and what stores them (memory.py, redis_store.py).

An account is one identity's hash for one period (a UTC day or month) with the fields `spent`,
`reserved`, and `spent:<provider>` / `reserved:<provider>`, in nano-dollars. A reservation fits
when, in every account, what is spent and reserved plus it stays within the limit (all
providers, and the provider's own).

Every reservation is a lease. It is settled when its call ends, renewed while the call lasts,
and otherwise expires: a flow's lease is then released (a crash or a kill frees what it held
within LEASE_SECONDS), a job's is charged (the provider bills a job whose result nobody fetched).
A job's lease that expired and was charged leaves a note, so that a late settlement charges
only what the expiry did not.
"""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

PeriodName = Literal["daily", "monthly"]
GRACE = 86400  # seconds an account outlives its period (a late settlement still lands)
LEASE_SECONDS = 120  # a flow's reservation outlives its last renewal by this much
RENEW_EVERY = 40.0  # seconds between renewals of the leases of calls still running


@dataclass(frozen=True, slots=True)
class Period:
    name: PeriodName
    ident: str  # "d20261124", "m202611"
    start: datetime
    resets: datetime

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.resets - now).total_seconds() + 0.999))


def periods(now: datetime) -> tuple[Period, Period]:
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    return (
        Period("daily", day.strftime("d%Y%m%d"), day, day + timedelta(days=1)),
        Period("monthly", month.strftime("m%Y%m"), month, month + timedelta(days=days)),
    )


@dataclass(frozen=True, slots=True)
class Account:
    key: str  # who (hashed) and which period
    ttl: int  # seconds the account is kept
    limit: int | None  # nano-dollars, all providers; None: none
    provider_limit: int | None  # nano-dollars, this provider
    identity: str = ""  # whose (the admin's top view ranks identities by spend)
    period: str = ""  # which (Period.ident)


def who(identity: str) -> str:
    """Identities may hold any character, and a shared store needs no personal data."""
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def account_key(identity: str, period: Period) -> str:
    return f"{{{who(identity)}}}:{period.ident}"  # {hash tag}: one Redis Cluster slot


@dataclass(frozen=True, slots=True)
class Lease:
    id: str  # unique within an account: a flow's id, or `job:<object key>`
    seconds: int  # from now until it expires
    charge: bool = False  # on expiry: charged (a job), not released (a flow)


class BudgetStore(Protocol):
    async def reserve(
        self, accounts: tuple[Account, ...], provider: str, amount: int, lease: Lease
    ) -> int:
        """0 when reserved in every account under `lease`; else the (1-based) account that
        cannot cover it, and nothing was reserved."""
        ...

    async def settle(
        self, accounts: tuple[Account, ...], provider: str, lease: str | None, spent: int
    ) -> None:
        """Release the lease (if still held) and add `spent`, in every account (less what the
        lease's expiry charged, if it expired as a job's)."""
        ...

    async def renew(self, accounts: tuple[Account, ...], leases: tuple[str, ...]) -> None:
        """The leases still held run LEASE_SECONDS from now (their calls are running)."""
        ...

    async def retain(self, accounts: tuple[Account, ...], lease: str, job: Lease) -> bool:
        """A flow's lease becomes a job's (its answer created a job that bills later): False
        when it was no longer held."""
        ...

    async def divide(
        self, accounts: tuple[Account, ...], lease: str, jobs: tuple[tuple[Lease, int], ...]
    ) -> bool:
        """A flow's lease becomes several jobs' (a call that started several jobs, each billed
        when its result comes: Runware's tasks), each holding its amount of what the flow held
        (at most all of it); the rest is released. False when it was no longer held."""
        ...

    async def top(self, period: str, n: int) -> list[tuple[str, int]]:
        """The n identities that spent most in the period (`d20261124`), with their spend."""
        ...

    async def read(self, keys: tuple[str, ...]) -> list[dict[str, int]]: ...

    async def close(self) -> None: ...


def fits(fields: dict[str, int], account: Account, provider: str, amount: int) -> bool:
    """The rule both stores apply (the Redis script spells it again in Lua)."""
    for limit, prefix in ((account.limit, ""), (account.provider_limit, f":{provider}")):
        if limit is None:
            continue
        held = fields.get(f"spent{prefix}", 0) + fields.get(f"reserved{prefix}", 0)
        if held >= limit or held + amount > limit:
            return False
    return True


class NegativeAmount(ValueError):
    """A negative amount would wipe out other reservations: the books take none."""


def non_negative(*amounts: int) -> None:
    """Both stores call this before they write: a negative reservation (a negative max_tokens
    once made one) would free what concurrent requests hold."""
    if any(amount < 0 for amount in amounts):
        raise NegativeAmount(f"the books take no negative amount ({min(amounts)})")


def entries(provider: str, released: int, spent: int) -> dict[str, int]:
    """The field increments of a settlement (a reservation: spent 0, released negative)."""
    return {
        "reserved": -released,
        f"reserved:{provider}": -released,
        "spent": spent,
        f"spent:{provider}": spent,
    }


def rank_key(period: str) -> str:
    return f"rank:{period}"
