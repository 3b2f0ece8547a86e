"""CORS decisions for browser clients on other origins: which policy applies, the preflight
answer and the headers of actual responses. Pure: knows nothing of mitmproxy (component.py does
the wiring; the policies come from addon/config/cors.py).

keyrelay answers preflights itself, before any authentication, because a browser never sends
credentials on a preflight and an error there hides every later answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from addon.config.cors import CorsPolicy
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.problems import Refusal
from addon.targets import TargetError, normalise_path, path_under

Header = Callable[[str], str | None]
HeaderPairs = tuple[tuple[str, str], ...]

CROSS_ORIGIN_FETCH = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values

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
