"""One provider's authentication, ready to run: secrets read and key sets loaded at rules load."""

from __future__ import annotations

from collections.abc import Callable

from addon.auth.config import AuthSpec
from addon.auth.forward import ForwardAuth, identity_from
from addon.auth.identity import Identity, anonymous
from addon.auth.jwks import JwksError, JwksKeys
from addon.auth.jwt_auth import JwtVerifier
from addon.auth.presented import presented
from addon.auth.secret_ref import SecretMissing
from addon.auth.tokens import TokenError, TokenStore
from addon.problems import Refusal

Header = Callable[[str], str | None]


class AuthSetupError(ValueError):
    """A secret or key set named in the rules cannot be used; the message names where."""


class Shared:
    """Key sets and forward-auth caches, shared by providers with the same source and kept
    across rules reloads so a reload neither refetches keys nor forgets cached decisions."""

    def __init__(self) -> None:
        self.jwks: dict[tuple[object, ...], JwksKeys] = {}
        self.forward: dict[object, ForwardAuth] = {}

    def start(self) -> None:
        for keys in self.jwks.values():
            keys.start()

    def stop(self) -> None:
        for keys in self.jwks.values():
            keys.stop()


class Gate:
    def __init__(self, spec: AuthSpec, environ: dict[str, str], shared: Shared) -> None:
        self.spec = spec
        self.tokens: TokenStore | None = None
        self.jwt: JwtVerifier | None = None
        self.forward: ForwardAuth | None = None
        try:
            if spec.tokens is not None:
                self.tokens = TokenStore(spec.tokens.read(environ))
            if spec.jwt is not None:
                jwt_spec = spec.jwt
                secret = jwt_spec.secret.read(environ).strip() if jwt_spec.secret else None
                keys = None
                if jwt_spec.jwks_url or jwt_spec.jwks_file:
                    source = (jwt_spec.jwks_url, jwt_spec.jwks_file, jwt_spec.algorithms)
                    if source not in shared.jwks or jwt_spec.jwks_file is not None:
                        shared.jwks[source] = JwksKeys(
                            jwt_spec.algorithms, file=jwt_spec.jwks_file, url=jwt_spec.jwks_url
                        )
                    keys = shared.jwks[source]
                    keys.refresh = jwt_spec.refresh
                self.jwt = JwtVerifier(jwt_spec, secret, keys)
            if spec.forward is not None:
                self.forward = shared.forward.setdefault(spec.forward, ForwardAuth(spec.forward))
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
            verdict = await self.forward.check(credentials, method, uri)
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
