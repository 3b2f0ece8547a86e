"""The embedded books: this process's memory. mitmproxy runs every hook on one event loop and
nothing here awaits between a check and its write, so each call is atomic. Gone at restart.

The same rules as the Redis script (redis_store.py), spelt in Python: a lease expires before
anything reads or writes its account.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from addon.budget.books import LEASE_SECONDS, Account, Lease, entries, fits, non_negative

SWEEP_EVERY = 600.0  # seconds between two sweeps of accounts past their period


@dataclass(slots=True)
class _Held:
    expires: float
    amount: int
    provider: str
    charge: bool


@dataclass(slots=True)
class _Books:
    ends: float
    identity: str  # and period: where a charge is ranked
    period: str
    fields: dict[str, int] = field(default_factory=dict)
    leases: dict[str, _Held] = field(default_factory=dict)
    charged: dict[str, int] = field(default_factory=dict)  # jobs charged when their lease expired


class MemoryBooks:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._accounts: dict[str, _Books] = {}
        self._ranks: dict[str, Counter[str]] = {}
        self._next_sweep = clock() + SWEEP_EVERY

    def _books(self, account: Account) -> _Books:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        books = self._accounts.get(account.key)
        if books is None or books.ends <= now:
            books = _Books(now + account.ttl, account.identity, account.period)
            self._accounts[account.key] = books
        self._expire(books, now)
        return books

    def _rank(self, books: _Books, spent: int) -> None:
        if spent and books.period:
            self._ranks.setdefault(books.period, Counter())[books.identity] += spent

    def _expire(self, books: _Books, now: float) -> None:
        """Release each lease past its time; charge a job's."""
        for lease, held in [(k, v) for k, v in books.leases.items() if v.expires <= now]:
            del books.leases[lease]
            cost = held.amount if held.charge else 0
            _add(books.fields, entries(held.provider, held.amount, cost))
            if held.charge:
                books.charged[lease] = held.amount
                self._rank(books, cost)

    async def reserve(
        self, accounts: tuple[Account, ...], provider: str, amount: int, lease: Lease
    ) -> int:
        non_negative(amount)
        all_books = [self._books(a) for a in accounts]
        for i, (books, account) in enumerate(zip(all_books, accounts, strict=True), 1):
            if not fits(books.fields, account, provider, amount):
                return i
        expires = self._clock() + lease.seconds
        for books in all_books:
            _add(books.fields, entries(provider, -amount, 0))
            if amount:  # nothing to release (Redis keeps no lease for 0 either)
                books.leases[lease.id] = _Held(expires, amount, provider, lease.charge)
        return 0

    async def settle(
        self, accounts: tuple[Account, ...], provider: str, lease: str | None, spent: int
    ) -> None:
        non_negative(spent)
        for account in accounts:
            books = self._books(account)
            held = books.leases.pop(lease, None) if lease else None
            released = held.amount if held else 0
            cost = spent
            if held is None and lease in books.charged:  # its expiry charged it already
                cost = max(0, cost - books.charged.pop(lease))
            _add(books.fields, entries(provider, released, cost))
            self._rank(books, cost)

    async def renew(self, accounts: tuple[Account, ...], leases: tuple[str, ...]) -> None:
        expires = self._clock() + LEASE_SECONDS
        for account in accounts:
            held = self._books(account).leases
            for lease in leases:
                if lease in held:
                    held[lease].expires = expires

    async def retain(self, accounts: tuple[Account, ...], lease: str, job: Lease) -> bool:
        kept = False
        for account in accounts:
            held = self._books(account).leases
            if (mine := held.pop(lease, None)) is not None:
                held[job.id] = _Held(self._clock() + job.seconds, mine.amount, mine.provider, True)
                kept = True
        return kept

    async def divide(
        self, accounts: tuple[Account, ...], lease: str, jobs: tuple[tuple[Lease, int], ...]
    ) -> bool:
        kept = False
        for account in accounts:
            books = self._books(account)
            if (mine := books.leases.pop(lease, None)) is None:
                continue
            left = mine.amount
            for job, amount in jobs:
                if (part := min(amount, left)) > 0:
                    ends = self._clock() + job.seconds
                    books.leases[job.id] = _Held(ends, part, mine.provider, True)
                    left -= part
            _add(books.fields, entries(mine.provider, left, 0))
            kept = True
        return kept

    async def top(self, period: str, n: int) -> list[tuple[str, int]]:
        return self._ranks.get(period, Counter()).most_common(n)

    async def read(self, keys: tuple[str, ...]) -> list[dict[str, int]]:
        # Swept when due, not on every read: alerts read an account after each settlement.
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        out = []
        for key in keys:
            books = self._accounts.get(key)
            if books is not None and books.ends <= now:
                books = None  # past its period, not swept yet
            if books is not None:
                self._expire(books, now)
            out.append(dict(books.fields) if books else {})
        return out

    def _sweep(self, now: float) -> None:
        self._accounts = {k: v for k, v in self._accounts.items() if v.ends > now}
        live = {key.rpartition(":")[2] for key in self._accounts}
        self._ranks = {p: r for p, r in self._ranks.items() if p in live}
        self._next_sweep = now + SWEEP_EVERY

    async def close(self) -> None:
        self._accounts.clear()
        self._ranks.clear()


def _add(fields: dict[str, int], increments: dict[str, int]) -> None:
    for name, n in increments.items():
        if n:  # never below 0: a reservation outlived by its account is released to 0
            fields[name] = max(0, fields.get(name, 0) + n)
