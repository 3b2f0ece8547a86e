"""CORS for browser clients on other origins: which policy applies, the preflight answer and the
headers of actual responses. Pure: knows nothing of mitmproxy (cors_flow.py does the wiring).

Nothing is allowed cross-origin unless rules.yaml says so (`cors.origins`, under `defaults:` or
per provider). keyrelay answers preflights itself, before any authentication, because a browser
never sends credentials on a preflight and an error there hides every later answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from addon.problems import Refusal
from addon.targets import TargetError, normalise_path, path_under

if TYPE_CHECKING:
    from addon.config_node import Node
    from addon.rules import Provider, Rules

Header = Callable[[str], str | None]
HeaderPairs = tuple[tuple[str, str], ...]

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
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
    "x-fern-*",
    "x-fal-*",
    "x-inf-*",
    "x-client-source",
    "x-api-version",
)
# Response headers the clients read: request ids, retry hints, rate limits.
EXPOSED_HEADERS = (
    "x-fal-request-id",
    "x-fal-request-timeout-type",
    "request-id",
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "history-item-id",
    "character-cost",
    "x-character-count",
)
CROSS_ORIGIN_FETCH = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values
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
    parts = urlsplit(text.strip())
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


def parse_cors(node: Node | None, base: CorsPolicy = NO_CORS) -> CorsPolicy:
    """A `cors:` section; keys it leaves out come from `base` (the one under `defaults:`)."""
    if node is None:
        return base
    origins = base.origins
    if "origins" in node:
        origins = tuple(_origin(node, i, text) for i, text in enumerate(node.texts("origins")))
    extra = tuple(h.lower() for h in node.texts("allow_headers", ()))
    for i, name in enumerate(extra):
        if not re.fullmatch(r"[a-z0-9!#$%&'+.^_`|~-]+\*?", name):
            node.fail(
                f"'{name}' is not a header name (or a prefix ending in '*')", f"allow_headers[{i}]"
            )
    policy = CorsPolicy(
        origins=origins,
        credentials=node.flag("credentials", base.credentials),
        max_age=node.integer("max_age", base.max_age),
        allow_headers=tuple(dict.fromkeys(base.allow_headers + extra)),
    )
    node.finish()
    return policy


def _origin(node: Node, index: int, text: str) -> Origin:
    if text.strip() == "*":
        node.fail(
            "'*' would let every website spend your keys; list the origins instead",
            f"origins[{index}]",
        )
    try:
        return parse_origin(text, pattern=True)
    except OriginError as e:
        node.fail(f"'{text}': {e}", f"origins[{index}]")


# -- which policy -------------------------------------------------------------------------------


def provider_for(rules: Rules, path: str, header: Header) -> Provider | None:
    """The provider a request (or its preflight) is for, as far as can be told without a target.

    A preflight carries no target header, only its name in Access-Control-Request-Headers."""

    raw_path, _, query = path.partition("?")
    requested = set(requested_headers(header))
    query_names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    for p in rules.header_routed():
        if (
            (
                p.target_header
                and (header(p.target_header) is not None or p.target_header in requested)
            )
            or (p.target_query and p.target_query in query_names)
            or any(path_under(raw_path, prefix) for prefix in p.target_paths)
        ):
            return p
    try:
        norm = normalise_path(raw_path)
    except TargetError:
        return None
    return next((p for p in rules.prefixed() if p.prefix and path_under(norm, p.prefix)), None)


def policy_for(rules: Rules, path: str, header: Header) -> tuple[Provider | None, CorsPolicy]:
    provider = provider_for(rules, path, header)
    return provider, provider.cors if provider else rules.cors


def requested_headers(header: Header) -> list[str]:
    raw = header("access-control-request-headers") or ""
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


# -- answers ------------------------------------------------------------------------------------


def is_preflight(method: str, header: Header) -> bool:
    return (
        method == "OPTIONS"
        and header("origin") is not None
        and header("access-control-request-method") is not None
    )


@dataclass(frozen=True, slots=True)
class PreflightAnswer:
    status: int
    headers: HeaderPairs = field(default=())


def preflight(rules: Rules, path: str, header: Header) -> PreflightAnswer | Refusal:
    """The answer to a preflight: 204 with the allowances, or a 403 problem without any."""
    provider, policy = policy_for(rules, path, header)
    origin = header("origin")
    if not policy.allows(origin):
        return Refusal(
            403,
            "origin-not-allowed",
            f"the origin {origin} is not allowed to call "
            f"{provider.name if provider else 'keyrelay'} (see cors.origins in rules.yaml)",
        )
    assert origin is not None
    methods = (
        provider.methods if provider else frozenset().union(*(p.methods for p in rules.providers))
    )
    headers: list[tuple[str, str]] = [
        ("access-control-allow-origin", origin),
        ("access-control-allow-methods", ", ".join(sorted(methods))),
        ("access-control-max-age", str(policy.max_age)),
        ("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]
    if allowed := policy.allowed_headers(requested_headers(header)):
        headers.append(("access-control-allow-headers", ", ".join(allowed)))
    if policy.credentials:
        headers.append(("access-control-allow-credentials", "true"))
    if (header("access-control-request-private-network") or "").lower() == "true":
        # Chrome's private network access: a public site calling keyrelay on localhost.
        headers.append(("access-control-allow-private-network", "true"))
    return PreflightAnswer(204, tuple(headers))


def response_headers(policy: CorsPolicy, origin: str | None) -> HeaderPairs:
    """CORS headers for an actual response to `origin`; none when it is not allowed."""
    if origin is None or not policy.allows(origin):
        return ()
    headers: list[tuple[str, str]] = [
        ("access-control-allow-origin", origin),
        ("access-control-expose-headers", ", ".join(EXPOSED_HEADERS)),
    ]
    if policy.credentials:
        headers.append(("access-control-allow-credentials", "true"))
    return tuple(headers)


def refuses(policy: CorsPolicy, header: Header) -> Refusal | None:
    """A browser request from elsewhere that needed no preflight (a form post, a text/plain
    fetch, an <img> or a link: no Origin at all) would still spend the key: refuse it.

    `Sec-Fetch-Site` says what the browser thinks; SDKs and servers never send it. Browsers
    without it (older Safari) still send an Origin on a cross-origin POST: refused when that
    origin is not allowed and is not keyrelay's own address (the Host)."""
    origin = header("origin")
    site = (header("sec-fetch-site") or "").lower()
    if site in CROSS_ORIGIN_FETCH:
        if origin is not None and policy.allows(origin):
            return None
    elif site or origin is None or policy.allows(origin) or _same_authority(origin, header):
        return None
    return Refusal(
        403,
        "origin-not-allowed",
        f"the origin {origin or '(a cross-site page)'} is not allowed to call keyrelay "
        "(see cors.origins in rules.yaml)",
    )


def _same_authority(origin: str, header: Header) -> bool:
    """Whether the Origin names the host (and port) the request was sent to."""
    host = (header("host") or "").lower()
    try:
        parts = urlsplit(origin.lower())
        default = {"https": 443, "http": 80}.get(parts.scheme)
        port = parts.port
    except ValueError:
        return False
    name = parts.hostname or ""
    return host in (f"{name}:{port or default}", name if port in (None, default) else None)


def is_cors_header(name: str | bytes) -> bool:
    """Headers an upstream may send that must never reach the browser: keyrelay's policy rules.
    The name as text, or as mitmproxy stores it (bytes)."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    return name[:15].lower() == b"access-control-"
