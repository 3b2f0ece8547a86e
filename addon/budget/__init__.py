"""Budgets that hold: each request's worst case reserved before it is forwarded, settled to its
metered cost after; in memory or in Redis (one atomic script each). Settings:
addon/config/budget.py; the usage and prices: addon/metering/."""
