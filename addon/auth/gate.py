"""One provider's authentication, ready to run: its mode (modes.py) built at rules load, with
secrets read and key sets loaded, and what every mode shares: `allow:`."""

from __future__ import annotations

from addon.auth.identity import Identity
from addon.auth.jwks import JwksError
from addon.auth.modes import MODES, Attempt, Header, Setup, refused
from addon.auth.tokens import TokenError
from addon.config.auth import AuthSpec
from addon.config.secret_ref import SecretMissing
from addon.problems import Refusal
from addon.resources import Generation


class AuthSetupError(ValueError):
    """A secret or key set named in the rules cannot be used; the message names where."""


class Gate:
    def __init__(
        self, spec: AuthSpec, environ: dict[str, str], live: Generation, scope: str = ""
    ) -> None:
        """Key sets and forward-auth caches come from `live`: shared by providers with the same
        source, and kept across rules reloads (no refetch, no forgotten decisions)."""
        self.spec, self.scope = spec, scope  # scope: the provider's name
        try:
            self.mode = MODES[spec.mode](Setup(spec, environ, live, scope))
        except (SecretMissing, TokenError, JwksError) as e:
            raise AuthSetupError(str(e)) from e

    async def authenticate(
        self, method: str, uri: str, header: Header, client_ip: str
    ) -> Identity | Refusal:
        result = await self.mode.authenticate(Attempt(method, uri, header, client_ip))
        if isinstance(result, Refusal) or self.spec.mode == "none":
            return result
        if self.spec.allow is not None and result.name not in self.spec.allow:
            return refused(403)
        return result
