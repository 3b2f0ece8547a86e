"""Client authentication: who is calling keyrelay, before any key is spent on them (tokens,
JWTs, a forward-auth service). Its settings are addon/config/auth.py; guard/ runs it.
"""
