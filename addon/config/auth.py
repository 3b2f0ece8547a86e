"""The `auth:` section of a provider (or of `defaults:`): which mode, where the credential is."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StrictStr, model_validator

from addon.config.key_sources import RulesPath
from addon.config.model import (
    ONE_OR_MANY,
    Flag,
    Number,
    Positive,
    Text,
    Texts,
    fail,
    matching,
    section,
)
from addon.config.secret_ref import SecretRef

MODES = ("none", "tokens", "jwt", "forward")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
# RFC 9110 tokens: header and cookie names, methods (config/provider.py).
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _http_url(url: str) -> str:
    if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).hostname:
        fail("must be an http(s) URL")
    return url


Names = Annotated[frozenset[StrictStr], ONE_OR_MANY]
# Lower-case once read.
HeaderName = Annotated[
    Text, matching(TOKEN, "is not a valid header name"), AfterValidator(str.lower)
]
HttpUrl = Annotated[Text, AfterValidator(_http_url)]


def _algorithms(algorithms: tuple[str, ...]) -> tuple[str, ...]:
    for alg in algorithms:
        if alg not in JWT_ALGORITHMS:
            fail(f"'{alg}' is not one of {', '.join(JWT_ALGORITHMS)}")
    if "HS256" in algorithms and len(algorithms) > 1:
        # A key set shared between HMAC and public-key algorithms invites algorithm confusion.
        fail("HS256 cannot be combined with public-key algorithms")
    return algorithms


@section
class JwtSpec:
    audience: Text
    issuer: Text
    algorithms: Annotated[Texts, AfterValidator(_algorithms)] = ("RS256",)
    secret: SecretRef | None = None  # HS256
    jwks: HttpUrl | None = None  # RS256 / ES256: a URL...
    jwks_file: RulesPath | None = None  # ...or a file
    leeway: Number = 30.0
    refresh: Annotated[Number, Field(ge=10)] = 300.0  # seconds between JWKS fetches
    identity_claim: Text = "sub"

    def __post_init__(self) -> None:
        if "HS256" in self.algorithms:
            if self.secret is None or self.jwks or self.jwks_file:
                fail("HS256 needs secret (and no jwks)", "secret")
        elif self.secret is not None or (self.jwks is None) == (self.jwks_file is None):
            fail("RS256/ES256 need exactly one of jwks (a URL) or jwks_file, and no secret")


@section
class ForwardSpec:
    url: HttpUrl
    identity_header: HeaderName
    cache: Number = 10.0  # seconds a decision is reused for the same cookies + Authorization
    timeout: Annotated[Number, Field(ge=0.1)] = 3.0
    per_uri: Flag = False  # the app decides per method and URI: cache per URI too
    concurrency: Positive = 4  # calls to the app at once; more wait (at most `timeout`), then 503


@section
class AuthSpec:
    mode: Literal["none", "tokens", "jwt", "forward"] = "none"
    header: HeaderName = "authorization"  # "Bearer <credential>" there; the raw value elsewhere
    cookie: Annotated[Text, matching(TOKEN, "is not a valid cookie name")] | None = None
    allow: Names | None = None  # only these identities; others get a 403
    tokens: SecretRef | None = None
    jwt: JwtSpec | None = None
    forward: ForwardSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_written(cls, raw: Any) -> Any:
        """Checks of the mapping as written: each mode's own key, and only that mode's."""
        if not isinstance(raw, dict):
            return raw
        mode = raw.get("mode", "none")
        for other in ("tokens", "jwt", "forward"):
            if other in raw and other != mode:
                fail(f"only applies to mode: {other}", other)
        if mode in ("tokens", "jwt", "forward") and raw.get(mode) is None:
            fail("is required", mode)
        if mode == "none" and (raw.get("cookie") or raw.get("allow") is not None):
            fail("cookie and allow need an auth mode other than none", "mode")
        return raw
