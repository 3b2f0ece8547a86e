"""The `auth:` section of a provider (or of `defaults:`): which mode, where the credential is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from addon.config.node import Node
from addon.config.secret_ref import SecretRef, parse_secret

MODES = ("none", "tokens", "jwt", "forward")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
_HEADER = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class JwtSpec:
    algorithms: tuple[str, ...]
    audience: str
    issuer: str
    secret: SecretRef | None = None  # HS256
    jwks_url: str | None = None  # RS256 / ES256
    jwks_file: Path | None = None
    leeway: float = 30.0
    refresh: float = 300.0  # seconds between JWKS fetches
    identity_claim: str = "sub"


@dataclass(frozen=True, slots=True)
class ForwardSpec:
    url: str
    identity_header: str
    cache: float = 10.0  # seconds a decision is reused for the same cookies + Authorization
    timeout: float = 3.0
    per_uri: bool = False  # the app decides per method and URI: cache per URI too
    concurrency: int = 4  # calls to the app at once; more wait (at most `timeout`), then 503


@dataclass(frozen=True, slots=True)
class AuthSpec:
    mode: str = "none"
    header: str = "authorization"  # "Bearer <credential>" there; the raw value in any other
    cookie: str | None = None  # browser clients: the credential in this cookie instead
    allow: frozenset[str] | None = None  # only these identities (names); others get a 403
    tokens: SecretRef | None = None
    jwt: JwtSpec | None = None
    forward: ForwardSpec | None = None


def parse_auth(node: Node | None) -> AuthSpec:
    if node is None:
        return AuthSpec()
    mode = node.text("mode", "none")
    if mode not in MODES:
        node.fail(f"must be one of {', '.join(MODES)}", "mode")
    header = node.text("header", "authorization").lower()
    if not _HEADER.fullmatch(header):
        node.fail("is not a valid header name", "header")
    cookie = node.text("cookie", None)
    if cookie is not None and not _COOKIE.fullmatch(cookie):
        node.fail("is not a valid cookie name", "cookie")
    allow = node.texts("allow", None)
    spec = AuthSpec(
        mode=mode,
        header=header,
        cookie=cookie,
        allow=frozenset(allow) if allow is not None else None,
        tokens=parse_secret(node, "tokens") if mode == "tokens" else None,
        jwt=_jwt(node.child("jwt")) if mode == "jwt" else None,
        forward=_forward(node.child("forward")) if mode == "forward" else None,
    )
    for other in ("tokens", "jwt", "forward"):
        if other in node and other != mode:
            node.fail(f"only applies to mode: {other}", other)
    if mode == "none" and (cookie or allow is not None):
        node.fail("cookie and allow need an auth mode other than none", "mode")
    node.finish()
    return spec


def _jwt(node: Node) -> JwtSpec:
    algorithms = node.texts("algorithms", ("RS256",))
    for alg in algorithms:
        if alg not in JWT_ALGORITHMS:
            node.fail(f"'{alg}' is not one of {', '.join(JWT_ALGORITHMS)}", "algorithms")
    hmac = "HS256" in algorithms
    if hmac and len(algorithms) > 1:
        # A key set shared between HMAC and public-key algorithms invites algorithm confusion.
        node.fail("HS256 cannot be combined with public-key algorithms", "algorithms")
    secret = parse_secret(node, "secret") if "secret" in node else None
    jwks_url = node.text("jwks", None)
    jwks_file = node.text("jwks_file", None)
    if hmac and (secret is None or jwks_url or jwks_file):
        node.fail("HS256 needs secret (and no jwks)", "secret")
    if not hmac and (secret is not None or (jwks_url is None) == (jwks_file is None)):
        node.fail("RS256/ES256 need exactly one of jwks (a URL) or jwks_file, and no secret")
    if jwks_url is not None and urlsplit(jwks_url).scheme not in ("https", "http"):
        node.fail("must be an http(s) URL", "jwks")
    spec = JwtSpec(
        algorithms=tuple(algorithms),
        audience=node.text("audience"),
        issuer=node.text("issuer"),
        secret=secret,
        jwks_url=jwks_url,
        jwks_file=Path(node.file).resolve().parent / jwks_file if jwks_file else None,
        leeway=node.number("leeway", 30.0),
        refresh=node.number("refresh", 300.0, minimum=10),
        identity_claim=node.text("identity_claim", "sub"),
    )
    node.finish()
    return spec


def _forward(node: Node) -> ForwardSpec:
    url = node.text("url")
    if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).hostname:
        node.fail("must be an http(s) URL", "url")
    identity_header = node.text("identity_header").lower()
    if not _HEADER.fullmatch(identity_header):
        node.fail("is not a valid header name", "identity_header")
    spec = ForwardSpec(
        url=url,
        identity_header=identity_header,
        cache=node.number("cache", 10.0),
        timeout=node.number("timeout", 3.0, minimum=0.1),
        per_uri=node.flag("per_uri", False),
        concurrency=node.integer("concurrency", 4, minimum=1),
    )
    node.finish()
    return spec
