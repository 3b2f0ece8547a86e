"""The `cors:` section (under `defaults:` or a provider): which browser origins may call keyrelay.

Nothing is allowed cross-origin unless rules.yaml says so. Origins are parsed here once, at
load; addon/cors/answers.py decides each request with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from addon.config.model import TEXT, Flag, Text, Whole, fail, from_text, section

DEFAULT_MAX_AGE = 600  # seconds; Chromium caps preflight caching at 7200
# Request headers the providers' own clients send from a browser (PROVIDERS.md and what the
# clients were seen sending); a trailing '*' matches a prefix. keyrelay strips credentials and
# browser context before forwarding, so allowing a header here never forwards it blindly.
CLIENT_HEADERS = (
    "accept",
    "content-type",
    "authorization",
    "x-api-key",
    "xi-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-stainless-*",
    "openai-beta",
    "idempotency-key",
    "x-fern-*",
    "x-fal-*",
    "x-inf-*",
    "x-client-source",
    "x-api-version",
    "x-goog-api-key",  # @google/genai: its key, its version, its timeout in seconds
    "x-goog-api-client",
    "x-server-timeout",
    "user-agent",  # @google/genai sets it; a browser that sends it asks the preflight first
)
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    """scheme://host[:port] as a browser serialises it; `host` may start with '*.' in patterns."""

    scheme: str
    host: str
    port: int

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")

    def matches(self, other: Origin) -> bool:
        if (self.scheme, self.port) != (other.scheme, other.port):
            return False
        if self.wildcard:  # any subdomain, at any depth, but not the domain itself
            return other.host.endswith(self.host[1:])
        return self.host == other.host


def parse_origin(text: str, *, pattern: bool = False) -> Origin:
    try:
        parts = urlsplit(text.strip())
    except ValueError:  # "http://[" and the like: a malformed origin is not an allowed one
        raise OriginError("an origin looks like https://app.example.com") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise OriginError("an origin looks like http://localhost:3000 or https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise OriginError("an origin has no path, query, fragment or user information")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise OriginError("the port is not valid") from None
    name = host[2:] if pattern and host.startswith("*.") else host
    if name.startswith("[") or ":" in name:
        pass  # IPv6 literal
    elif not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise OriginError(
            "'*' may only stand for the leftmost labels, as in https://*.example.com"
            if "*" in name
            else "the host name is not valid"
        )
    return Origin(parts.scheme, host, port)


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: tuple[Origin, ...] = ()
    credentials: bool = False
    max_age: int = DEFAULT_MAX_AGE
    allow_headers: tuple[str, ...] = CLIENT_HEADERS  # lower-case; a trailing '*' is a prefix

    def allows(self, origin: str | None) -> bool:
        if not origin or not self.origins:
            return False
        try:
            seen = parse_origin(origin)
        except OriginError:
            return False  # "null" (sandboxed frames, file://) and anything malformed
        return any(allowed.matches(seen) for allowed in self.origins)

    def allowed_headers(self, requested: Iterable[str]) -> list[str]:
        def listed(name: str) -> bool:
            return any(
                name.startswith(glob[:-1]) if glob.endswith("*") else name == glob
                for glob in self.allow_headers
            )

        return [name for name in requested if listed(name)]


NO_CORS = CorsPolicy()


def _allowed_origin(text: str) -> Origin:
    if text.strip() == "*":
        fail("'*' would let every website spend your keys; list the origins instead")
    return parse_origin(text, pattern=True)


def _header_glob(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9!#$%&'+.^_`|~-]+\*?", name.lower()):
        fail(f"'{name}' is not a header name (or a prefix ending in '*')")
    return name.lower()


@section
class Cors:
    """The `cors:` section as rules.yaml writes it; `layer` puts it over `defaults.cors`."""

    origins: tuple[Annotated[Origin, from_text(_allowed_origin), TEXT], ...] | None = None
    credentials: Flag | None = None
    max_age: Whole | None = None
    allow_headers: tuple[Annotated[Text, AfterValidator(_header_glob)], ...] = ()

    def layer(self, base: CorsPolicy = NO_CORS) -> CorsPolicy:
        """This section over `base`: keys it leaves out are base's; headers add to base's."""
        return CorsPolicy(
            origins=base.origins if self.origins is None else self.origins,
            credentials=base.credentials if self.credentials is None else self.credentials,
            max_age=base.max_age if self.max_age is None else self.max_age,
            allow_headers=tuple(dict.fromkeys(base.allow_headers + self.allow_headers)),
        )
