"""One provider of rules.yaml (`providers.<name>`): how requests reach it, where they may go,
its key, and the sections (auth, limits, validation, transport, cors) that apply to it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from addon.config.auth import AuthSpec, parse_auth
from addon.config.budget import BudgetSpec, Price, parse_budget, parse_prices
from addon.config.cors import NO_CORS, CorsPolicy, parse_cors
from addon.config.credential import Credential, parse_credential
from addon.config.limits import LimitSpec, parse_limits
from addon.config.node import Node
from addon.config.ownership import OwnershipSpec, parse_ownership
from addon.config.transport import TransportSpec, parse_transport
from addon.config.validation import ValidationSpec, parse_validation
from addon.targets import Pattern, PatternError, compile_pattern

DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PREFIX = re.compile(r"(/[A-Za-z0-9\-._~]+)+")


# fal's token endpoint: a token for apps outside the endpoint allowlist would get around it.
TOKEN_URLS = ("rest.fal.ai/tokens/", "rest.alpha.fal.ai/tokens/")
MAX_TOKEN_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/v1": the rest of the client's path is appended


@dataclass(frozen=True, slots=True)
class EndpointAllowlist:
    """Only these endpoint ids (fal model ids like `fal-ai/flux/dev`) may take `methods`."""

    allow: tuple[str, ...]
    methods: frozenset[str]
    hosts: frozenset[str]
    # POSTs that mint tokens for allowed apps only (a body rule: addon/guard/token_grants.py)
    token_urls: tuple[str, ...] = TOKEN_URLS
    max_token_seconds: int = MAX_TOKEN_SECONDS

    def allows(self, method: str, host: str, path: str) -> bool:
        if method not in self.methods or (self.hosts and host not in self.hosts):
            return True
        return any(path == f"/{e}" or path.startswith(f"/{e}/") for e in self.allow)


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    forward: tuple[str, ...] | None  # lower-case globs; None forwards everything not stripped
    strip: frozenset[str]
    set: tuple[tuple[str, str], ...]
    default: tuple[tuple[str, str], ...]

    def forwards(self, name: str) -> bool:
        """Whether an allowlist, if any, lets a (lower-case) header name through."""
        if self.forward is None:
            return True
        return any(
            name.startswith(glob[:-1]) if glob.endswith("*") else name == glob
            for glob in self.forward
        )


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    credential: Credential
    headers: HeaderPolicy
    methods: frozenset[str]
    prefix: str | None = None
    upstream: Upstream | None = None
    target_header: str | None = None
    target_query: str | None = None
    target_paths: tuple[str, ...] = ()  # where a request without a target is a 400, not a 404
    allow: tuple[Pattern, ...] = ()
    endpoints: EndpointAllowlist | None = None
    auth: AuthSpec = field(default_factory=AuthSpec)
    limits: LimitSpec = field(default_factory=LimitSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    transport: TransportSpec = field(default_factory=TransportSpec)  # streams, sizes, timeouts
    cors: CorsPolicy = NO_CORS  # browsers on other origins: none allowed unless configured
    ownership: OwnershipSpec = field(default_factory=OwnershipSpec)  # who may read a job
    prices: tuple[Price, ...] = ()  # USD, first match wins (config/budget.py)
    budget: BudgetSpec = field(default_factory=BudgetSpec)  # this provider's own share


def section(node: Node, defaults: Node, name: str) -> Node | None:
    """A provider's own `name` section, else the one under `defaults`, else None."""
    inherited = defaults.child(name, None)
    return node.child(name) if name in node else inherited


def parse_provider(name: str, node: Node, defaults: Node) -> Provider:
    if not _NAME.fullmatch(name):
        node.fail("a provider name must be lower-case letters, digits, '-' or '_'")
    match = node.child("match")
    prefix = match.text("prefix", None)
    target_header = match.text("header", None)
    target_query = match.text("query", None)
    target_paths = match.texts("paths", ())
    match.finish()
    if prefix is None and target_header is None and target_query is None:
        match.fail("needs a prefix, a header or a query parameter")
    if prefix is not None and (target_header or target_query):
        match.fail("a provider is matched either by prefix or by target header/query, not both")
    if prefix is not None and not _PREFIX.fullmatch(prefix):
        match.fail("must look like /api/name (no trailing '/', no query)", "prefix")
    if target_header is not None and not _TOKEN.fullmatch(target_header):
        match.fail("is not a valid header name", "header")
    if target_paths and prefix is not None:
        match.fail("paths only applies to header-routed providers", "paths")
    for i, p in enumerate(target_paths):
        if not _PREFIX.fullmatch(p):
            match.fail("must look like /api/name (no trailing '/', no query)", f"paths[{i}]")

    upstream = None
    if prefix is not None:
        upstream = _upstream(node, node.text("upstream"))
    allow = tuple(_pattern(node, i, p) for i, p in enumerate(node.texts("allow", ())))
    if prefix is None and not allow:
        node.fail("a header-routed provider needs at least one allow pattern", "allow")
    if prefix is not None and upstream is not None and allow:
        # For a prefix provider the patterns name the upstream paths it may reach.
        for i, pattern in enumerate(allow):
            if not pattern.host_matches(upstream.host):
                node.fail(f"'{pattern.text}' can never match the upstream host", f"allow[{i}]")

    methods = frozenset(m.upper() for m in node.texts("methods", tuple(DEFAULT_METHODS)))
    if bad := sorted(m for m in methods if not _TOKEN.fullmatch(m) or m in ("CONNECT", "TRACE")):
        node.fail(f"'{bad[0]}' is not a method keyrelay forwards", "methods")
    provider = Provider(
        name=name,
        credential=parse_credential(node.child("credential")),
        headers=_headers(node.child("request_headers", None)),
        methods=methods,
        prefix=prefix,
        upstream=upstream,
        target_header=target_header.lower() if target_header else None,
        target_query=target_query,
        target_paths=target_paths,
        allow=allow,
        endpoints=_endpoints(node.child("endpoints", None)),
        auth=parse_auth(section(node, defaults, "auth")),
        limits=parse_limits(section(node, defaults, "limits")),
        validation=parse_validation(section(node, defaults, "validation")),
        transport=parse_transport(section(node, defaults, "transport")),
        # Keys a provider's cors leaves out come from defaults.cors (e.g. credentials only).
        cors=parse_cors(node.child("cors", None), parse_cors(defaults.child("cors", None))),
        ownership=parse_ownership(
            node, "ownership", parse_ownership(defaults, "ownership", OwnershipSpec())
        ),
        prices=parse_prices(node),
        budget=parse_budget(node),
    )
    node.finish()
    return provider


def _upstream(node: Node, url: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        node.fail("must be an http(s) URL with a host", "upstream")
    if parts.query or parts.fragment or parts.username or parts.password:
        node.fail("must not have a query, fragment or user information", "upstream")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        node.fail("has an invalid port", "upstream")
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _pattern(node: Node, index: int, text: str) -> Pattern:
    try:
        return compile_pattern(text)
    except PatternError as e:
        node.fail(f"'{text}': {e}", f"allow[{index}]")


def _headers(node: Node | None) -> HeaderPolicy:
    if node is None:
        return HeaderPolicy(None, frozenset(), (), ())
    forward = node.texts("forward", None)
    policy = HeaderPolicy(
        forward=tuple(h.lower() for h in forward) if forward is not None else None,
        strip=frozenset(h.lower() for h in node.texts("strip", ())),
        set=tuple(node.text_map("set").items()),
        default=tuple(node.text_map("default").items()),
    )
    for name, _ in policy.set + policy.default:
        if not _TOKEN.fullmatch(name):
            node.fail(f"'{name}' is not a valid header name")
    node.finish()
    return policy


def _endpoints(node: Node | None) -> EndpointAllowlist | None:
    if node is None:
        return None
    allow = node.texts("allow")
    for i, endpoint in enumerate(allow):
        if not endpoint or endpoint.startswith("/") or ".." in endpoint.split("/"):
            node.fail("an endpoint id looks like 'fal-ai/flux/dev'", f"allow[{i}]")
    endpoints = EndpointAllowlist(
        allow=tuple(allow),
        methods=frozenset(m.upper() for m in node.texts("methods", ("POST",))),
        hosts=frozenset(h.lower() for h in node.texts("hosts", ())),
        token_urls=node.texts("token_urls", TOKEN_URLS),
        max_token_seconds=node.integer("max_token_seconds", MAX_TOKEN_SECONDS, minimum=1),
    )
    node.finish()
    return endpoints
