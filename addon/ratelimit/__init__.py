"""Rate limits, daily quotas and concurrent-request limits per client identity and provider,
in memory or in Redis. Settings: addon/config/limits.py; guard/ runs it.

(Not named `limits`: mitmproxy puts addon/ on sys.path while loading the script, and a module
of that name would hide the `limits` library.)
"""
