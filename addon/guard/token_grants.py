"""fal's token endpoint must not mint a way around the endpoint allowlist.

`POST https://rest.fal.ai/tokens/` with `{"allowed_apps": [...], "token_expiration": s}` returns
a token that runs those apps directly at fal, without keyrelay (fal's realtime client uses it
for its WebSocket). So a request to a token URL is always a body rule: the token may live at
most `endpoints.max_token_seconds` (300 s without `endpoints:`), and when a provider has
`endpoints:`, every app it names must belong to an allowed endpoint (without, a token may name
any app: the key may run any app anyway). fal's client names an app by its alias (`flux` for
`fal-ai/flux/dev`), so `flux`, `fal-ai/flux` and `fal-ai/flux/dev` all pass for that endpoint:
a token is granted per app, so it reaches every endpoint of an allowed app.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from addon.config.provider import MAX_TOKEN_SECONDS, TOKEN_URLS, EndpointAllowlist
from addon.guard import body_rules
from addon.problems import Refusal

_FIELDS = frozenset({"allowed_apps", "token_expiration"})
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


def _canonical(url: str) -> str:
    """host/path without empty segments, lower-case: `rest.fal.ai//Tokens` is the same URL
    to a lenient server, so it must be to this check."""
    return "/".join(segment for segment in url.lower().split("/") if segment)


def applies(endpoints: EndpointAllowlist | None, method: str, host: str, path: str) -> bool:
    """Whether a request to the upstream host and path (with query) mints a token."""
    if method in _NO_BODY:
        return False
    token_urls = endpoints.token_urls if endpoints is not None else TOKEN_URLS
    hosts, urls = _canonical_all(token_urls)
    if host and "/" not in host and host.lower() not in hosts:
        return False  # the common case, decided without building the URL
    return _canonical(f"{host}/{path.partition('?')[0]}") in urls


@functools.lru_cache(maxsize=64)  # one entry per rules' token_urls: asked on every request
def _canonical_all(token_urls: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """The token URLs' hosts (each canonical URL's first segment), and the URLs."""
    urls = frozenset(_canonical(url) for url in token_urls)
    return frozenset(url.partition("/")[0] for url in urls), urls


def check(
    endpoints: EndpointAllowlist | None, content_types: Sequence[str], body: bytes
) -> Refusal | None:
    fields = body_rules.body_fields("rule endpoints", content_types, body, _FIELDS)
    if isinstance(fields, Refusal):
        return fields
    apps = fields.get("allowed_apps")
    if not isinstance(apps, list) or not apps:
        return _refused("the token request must list its allowed_apps")
    if not all(isinstance(app, str) for app in apps):
        return _refused("allowed_apps lists app ids")
    if endpoints is not None and not set(apps) <= _apps(endpoints):
        return _refused("a token may only be granted for apps in the endpoint allowlist")
    seconds = fields.get("token_expiration")
    cap = endpoints.max_token_seconds if endpoints is not None else MAX_TOKEN_SECONDS
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 < seconds <= cap:
        return _refused(f"token_expiration must be set, and at most {cap} seconds")
    return None


def _apps(endpoints: EndpointAllowlist) -> frozenset[str]:
    """What may stand in allowed_apps: an endpoint id, its app (`owner/alias`), its alias."""
    aliases = (app.split("/")[1] for app in endpoints.apps if "/" in app)
    return frozenset({*endpoints.allow, *endpoints.apps, *aliases})


def _refused(detail: str) -> Refusal:
    return Refusal(403, "token-not-allowed", f"rule endpoints: {detail}")
