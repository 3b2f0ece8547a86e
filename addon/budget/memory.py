"""The embedded books: this process's memory. mitmproxy runs every hook on one event loop and
nothing here awaits between a check and its write, so each call is atomic. Gone at restart."""

from __future__ import annotations

import time
from collections.abc import Callable

from addon.budget.books import Account, entries, fits, non_negative

SWEEP_EVERY = 600.0  # seconds between two sweeps of accounts past their period


class MemoryBooks:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._accounts: dict[str, tuple[float, dict[str, int]]] = {}
        self._next_sweep = clock() + SWEEP_EVERY

    def _fields(self, account: Account) -> dict[str, int]:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        held = self._accounts.get(account.key)
        if held is None or held[0] <= now:
            held = (now + account.ttl, {})
            self._accounts[account.key] = held
        return held[1]

    async def reserve(self, accounts: tuple[Account, ...], provider: str, amount: int) -> int:
        non_negative(amount)
        books = [self._fields(a) for a in accounts]
        for i, (fields, account) in enumerate(zip(books, accounts, strict=True), 1):
            if not fits(fields, account, provider, amount):
                return i
        for fields in books:
            _add(fields, entries(provider, -amount, 0))
        return 0

    async def settle(
        self, accounts: tuple[Account, ...], provider: str, reserved: int, spent: int
    ) -> None:
        non_negative(reserved, spent)
        for account in accounts:
            _add(self._fields(account), entries(provider, reserved, spent))

    async def read(self, keys: tuple[str, ...]) -> list[dict[str, int]]:
        self._sweep(self._clock())
        return [dict(self._accounts[k][1]) if k in self._accounts else {} for k in keys]

    def _sweep(self, now: float) -> None:
        self._accounts = {k: v for k, v in self._accounts.items() if v[0] > now}
        self._next_sweep = now + SWEEP_EVERY

    async def close(self) -> None:
        self._accounts.clear()


def _add(fields: dict[str, int], increments: dict[str, int]) -> None:
    for name, n in increments.items():
        if n:  # never below 0: a reservation outlived by its account is released to 0
            fields[name] = max(0, fields.get(name, 0) + n)
