"""Rate limits, daily quotas and concurrent-request limits per client identity and provider.

(Not named `limits`: mitmproxy puts addon/ on sys.path while loading the script, and a module
of that name would hide the `limits` library.)
"""

from addon.ratelimit.config import BackendSpec, LimitSpec, parse_backend, parse_limits

__all__ = ["BackendSpec", "LimitSpec", "parse_backend", "parse_limits"]
