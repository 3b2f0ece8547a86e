"""One provider's authentication, ready to run: secrets read and key sets loaded at rules load."""

from __future__ import annotations

import logging
from collections.abc import Callable

from addon.auth.forward import ForwardAuth, identity_from
from addon.auth.identity import Identity, anonymous
from addon.auth.jwks import JwksError, JwksKeys
from addon.auth.jwt_auth import JwtVerifier
from addon.auth.presented import presented
from addon.auth.tokens import TokenError, TokenStore
from addon.config.auth import AuthSpec
from addon.config.secret_ref import SecretMissing
from addon.problems import Refusal
from addon.resources import Generation

logger = logging.getLogger(__name__)
Header = Callable[[str], str | None]


class AuthSetupError(ValueError):
    """A secret or key set named in the rules cannot be used; the message names where."""


class Gate:
    def __init__(
        self, spec: AuthSpec, environ: dict[str, str], live: Generation, scope: str = ""
    ) -> None:
        """Key sets and forward-auth caches come from `live`: shared by providers with the same
        source, and kept across rules reloads (no refetch, no forgotten decisions)."""
        self.spec, self.scope = spec, scope  # scope: the provider's name
        self.tokens: TokenStore | None = None
        self.jwt: JwtVerifier | None = None
        self.forward: ForwardAuth | None = None
        try:
            if spec.tokens is not None:
                self.tokens = TokenStore(spec.tokens.read(environ))
                if not len(self.tokens):
                    logger.warning(
                        "keyrelay: %s: %s holds no token: every caller is refused",
                        scope or "auth",
                        spec.tokens.describe(),
                    )
            if spec.jwt is not None:
                jwt_spec = spec.jwt
                secret = jwt_spec.secret.read(environ).strip() if jwt_spec.secret else None
                keys = None
                if jwt_spec.jwks_file is not None:  # read again at every load
                    keys = JwksKeys(jwt_spec.algorithms, file=jwt_spec.jwks_file, url=None)
                elif jwt_spec.jwks_url is not None:
                    url, algorithms = jwt_spec.jwks_url, jwt_spec.algorithms
                    keys = live.get(
                        ("jwks", url, algorithms), lambda: JwksKeys(algorithms, file=None, url=url)
                    )
                    keys.refresh = jwt_spec.refresh
                self.jwt = JwtVerifier(jwt_spec, secret, keys)
            if spec.forward is not None:
                forward = spec.forward
                self.forward = live.get(("forward-auth", forward), lambda: ForwardAuth(forward))
        except (SecretMissing, TokenError, JwksError) as e:
            raise AuthSetupError(str(e)) from e

    async def authenticate(
        self, method: str, uri: str, header: Header, client_ip: str
    ) -> Identity | Refusal:
        fallback = anonymous(client_ip)
        if self.spec.mode == "none":
            return fallback
        if self.forward is not None:
            credentials = {n: v for n in ("cookie", "authorization") if (v := header(n))}
            if self.spec.header not in credentials and (v := header(self.spec.header)):
                credentials[self.spec.header] = v
            if not credentials:
                return _unauthenticated("no credentials were sent")
            verdict = await self.forward.check(credentials, method, uri, self.scope)
            if verdict.status == 503:
                return Refusal(503, "auth-unavailable", "the authentication service failed")
            if verdict.status != 200:
                return _refused(verdict.status)
            return self._allowed(identity_from(verdict, fallback))
        credential = presented(self.spec, header)
        if credential is None:
            return _unauthenticated("no credentials were sent")
        if self.tokens is not None:
            identity = self.tokens.identify(credential)
            if identity is None:
                return _unauthenticated("the token is not valid")
            return self._allowed(identity)
        assert self.jwt is not None
        result = await self.jwt.identify(credential)
        if isinstance(result, str):
            return _unauthenticated(result)
        return self._allowed(result)

    def _allowed(self, identity: Identity) -> Identity | Refusal:
        if self.spec.allow is not None and identity.name not in self.spec.allow:
            return _refused(403)
        return identity


def _unauthenticated(detail: str) -> Refusal:
    return Refusal(
        401,
        "unauthenticated",
        f"keyrelay needs a valid credential: {detail}",
        headers=(("www-authenticate", 'Bearer realm="keyrelay"'),),
    )


def _refused(status: int) -> Refusal:
    if status == 403:
        return Refusal(403, "forbidden", "this client is not allowed to use this provider")
    return _unauthenticated("the credentials were not accepted")
