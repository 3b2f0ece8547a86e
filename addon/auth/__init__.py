"""Client authentication: who is calling keyrelay, before any key is spent on them."""

from addon.auth.config import AuthSpec, parse_auth
from addon.auth.identity import Identity, identity_of

__all__ = ["AuthSpec", "Identity", "identity_of", "parse_auth"]
