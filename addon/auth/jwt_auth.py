"""JWT verification: signature (pinned algorithms), expiry, audience, issuer; the subject
(or the configured claim) becomes the identity."""

from __future__ import annotations

from typing import Any

import jwt

from addon.auth.identity import Identity
from addon.auth.jwks import JwksKeys
from addon.config.auth import JwtSpec


class JwtVerifier:
    def __init__(self, spec: JwtSpec, secret: str | None, keys: JwksKeys | None) -> None:
        self.spec, self._secret, self.keys = spec, secret, keys

    async def identify(self, token: str) -> Identity | str:
        """The identity, or a short reason (safe to show) why the token is refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "the token is not a JWT"
        if header.get("alg") not in self.spec.algorithms:
            return "the token's algorithm is not accepted"
        key: Any = self._secret
        if self.keys is not None:
            jwk = await self.keys.get(header.get("kid"))
            if jwk is None:
                return "the token's signing key is unknown"
            key = jwk.key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.spec.algorithms),
                audience=self.spec.audience,
                issuer=self.spec.issuer,
                leeway=self.spec.leeway,
                options={"require": ["exp", "aud", "iss", self.spec.identity_claim]},
            )
        except jwt.ExpiredSignatureError:
            return "the token has expired"
        except jwt.InvalidAudienceError:
            return "the token is for another audience"
        except jwt.InvalidIssuerError:
            return "the token is from another issuer"
        except jwt.PyJWTError:
            return "the token is invalid"
        subject = claims.get(self.spec.identity_claim)
        if not isinstance(subject, str | int) or str(subject) == "":
            return f"the token's {self.spec.identity_claim} claim is not usable"
        return Identity("jwt", str(subject), claims)
