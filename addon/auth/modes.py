"""The auth modes, one class each, behind one interface: given what a request presents, who is
calling, or the refusal. gate.py picks the class from `auth.mode` (MODES) and adds what every
mode shares (`allow:`).

A new mode is a class here and its entry in MODES (and its settings in config/auth.py). One that
must read the body (a signature over it) would take it in Attempt and be called from the
guard's `request` hook, where the body is whole; no mode needs that yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from addon.auth.forward import ForwardAuth, identity_from
from addon.auth.identity import Identity, anonymous
from addon.auth.jwks import JwksKeys
from addon.auth.jwt_auth import JwtVerifier
from addon.auth.presented import missing, presented_at
from addon.auth.tokens import TokenStore
from addon.config.auth import AuthSpec
from addon.problems import Refusal
from addon.resources import Generation

logger = logging.getLogger(__name__)
Header = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a request offers to be authenticated by."""

    method: str
    uri: str
    header: Header
    client_ip: str


class Authenticator(Protocol):
    async def authenticate(self, attempt: Attempt) -> Identity | Refusal: ...


@dataclass(frozen=True, slots=True)
class Setup:
    """What a mode is built from: its settings, the environment its secrets are read from,
    what outlives a reload (key sets, caches), and the provider it guards (logs)."""

    spec: AuthSpec
    environ: dict[str, str]
    live: Generation
    scope: str


class Open:
    """`none`: everyone, known by their address."""

    def __init__(self, setup: Setup) -> None:
        pass

    async def authenticate(self, attempt: Attempt) -> Identity | Refusal:
        return anonymous(attempt.client_ip)


class Tokens:
    """`tokens`: a bearer token (or cookie) found in a table of their hashes."""

    def __init__(self, setup: Setup) -> None:
        assert setup.spec.tokens is not None  # config/auth.py: mode tokens has its tokens
        self.spec = setup.spec
        self.tokens = TokenStore(setup.spec.tokens.read(setup.environ))
        if not len(self.tokens):
            logger.warning(
                "keyrelay: %s: %s holds no token: every caller is refused",
                setup.scope or "auth",
                setup.spec.tokens.describe(),
            )

    async def authenticate(self, attempt: Attempt) -> Identity | Refusal:
        found = presented_at(self.spec, attempt.header)
        if found is None:
            return unauthenticated(missing(self.spec, attempt.header))
        credential, place = found
        identity = self.tokens.identify(credential)
        if identity is None:
            return unauthenticated(f"the token in {place} is not valid")
        return identity


class Jwt:
    """`jwt`: a JSON Web Token, checked against a secret or a key set."""

    def __init__(self, setup: Setup) -> None:
        spec = setup.spec.jwt
        assert spec is not None  # config/auth.py: mode jwt has its settings
        self.spec = setup.spec
        secret = spec.secret.read(setup.environ).strip() if spec.secret else None
        keys = None
        if spec.jwks_file is not None:  # read again at every load
            keys = JwksKeys(spec.algorithms, file=spec.jwks_file, url=None)
        elif spec.jwks is not None:
            url, algorithms = spec.jwks, spec.algorithms
            keys = setup.live.get(
                ("jwks", url, algorithms), lambda: JwksKeys(algorithms, file=None, url=url)
            )
            keys.refresh = spec.refresh
        self.verifier = JwtVerifier(spec, secret, keys)

    async def authenticate(self, attempt: Attempt) -> Identity | Refusal:
        found = presented_at(self.spec, attempt.header)
        if found is None:
            return unauthenticated(missing(self.spec, attempt.header))
        credential, place = found
        result = await self.verifier.identify(credential)
        return unauthenticated(f"{result} (in {place})") if isinstance(result, str) else result


class Forwarded:
    """`forward`: the app's own service decides, from the request's credentials."""

    def __init__(self, setup: Setup) -> None:
        forward = setup.spec.forward
        assert forward is not None  # config/auth.py: mode forward has its settings
        self.spec, self.scope = setup.spec, setup.scope
        self.service = setup.live.get(("forward-auth", forward), lambda: ForwardAuth(forward))

    async def authenticate(self, attempt: Attempt) -> Identity | Refusal:
        header = attempt.header
        credentials = {n: v for n in ("cookie", "authorization") if (v := header(n))}
        if self.spec.header not in credentials and (v := header(self.spec.header)):
            credentials[self.spec.header] = v
        if not credentials:
            also = "" if self.spec.header == "authorization" else f" and {self.spec.header}"
            return unauthenticated(
                f"no credentials were sent; keyrelay passes Cookie, Authorization{also} to the"
                " app's auth service"
            )
        verdict = await self.service.check(credentials, attempt.method, attempt.uri, self.scope)
        if verdict.status == 503:
            return Refusal(503, "auth-unavailable", "the authentication service failed")
        if verdict.status != 200:
            return refused(verdict.status)
        return identity_from(verdict, anonymous(attempt.client_ip))


MODES: dict[str, Callable[[Setup], Authenticator]] = {
    "none": Open,
    "tokens": Tokens,
    "jwt": Jwt,
    "forward": Forwarded,
}


def unauthenticated(detail: str) -> Refusal:
    return Refusal(
        401,
        "unauthenticated",
        f"keyrelay needs a valid credential: {detail}",
        headers=(("www-authenticate", 'Bearer realm="keyrelay"'),),
    )


def refused(status: int) -> Refusal:
    if status == 403:
        return Refusal(403, "forbidden", "this client is not allowed to use this provider")
    return unauthenticated("the credentials were not accepted")
