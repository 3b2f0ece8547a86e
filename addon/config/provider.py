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
from addon.config.operations import BROWSER, Catalogue, parse_allow
from addon.config.ownership import OwnershipSpec, parse_ownership
from addon.config.profiles import Profile, merge_objects, merge_operations, overlay, select
from addon.config.tasks import TaskForm, parse_body_form
from addon.config.transport import TransportSpec, parse_transport
from addon.config.validation import ValidationSpec, parse_validation

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
    """Only these endpoint ids (fal model ids like `fal-ai/flux/dev`) may be run or read.

    A request that runs an endpoint names it whole (`/fal-ai/flux/dev`); one that reads or
    cancels a queued request names only its app (`/fal-ai/flux/requests/<id>/status`: fal's
    status URLs drop the endpoint's sub-path), so there the app of an allowed endpoint is enough.
    """

    allow: tuple[str, ...]
    methods: frozenset[str]
    hosts: frozenset[str]
    # POSTs that mint tokens for allowed apps only (a body rule: addon/guard/token_grants.py)
    token_urls: tuple[str, ...] = TOKEN_URLS
    max_token_seconds: int = MAX_TOKEN_SECONDS
    apps: frozenset[str] = field(init=False, compare=False)  # `owner/alias` of each endpoint

    def __post_init__(self) -> None:
        apps = frozenset("/".join(e.split("/")[:2]) for e in self.allow)
        object.__setattr__(self, "apps", apps)

    def allows(self, method: str, host: str, path: str) -> bool:
        if method not in self.methods or (self.hosts and host not in self.hosts):
            return True
        if any(path == f"/{e}" or path.startswith(f"/{e}/") for e in self.allow):
            return True
        segments = path.split("/")
        return segments[3:4] == ["requests"] and "/".join(segments[1:3]) in self.apps


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
    catalogue: Catalogue = field(default_factory=Catalogue)  # operations, objects, allow
    endpoints: EndpointAllowlist | None = None
    auth: AuthSpec = field(default_factory=AuthSpec)
    limits: LimitSpec = field(default_factory=LimitSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    transport: TransportSpec = field(default_factory=TransportSpec)  # streams, sizes, timeouts
    cors: CorsPolicy = NO_CORS  # browsers on other origins: none allowed unless configured
    ownership: OwnershipSpec = field(default_factory=OwnershipSpec)  # who may read a job
    prices: tuple[Price, ...] = ()  # USD, first match wins (config/budget.py)
    budget: BudgetSpec = field(default_factory=BudgetSpec)  # this provider's own share
    tasks: TaskForm | None = None  # `body: {form: tasks}`: every call is an array of tasks


def section(node: Node, defaults: Node, name: str) -> Node | None:
    """A provider's own `name` section, else the one under `defaults`, else None."""
    inherited = defaults.child(name, None)
    return node.child(name) if name in node else inherited


def parse_provider(name: str, entry: Node, defaults: Node) -> Provider:
    if not _NAME.fullmatch(name):
        entry.fail("a provider name must be lower-case letters, digits, '-' or '_'")
    profile = select(name, entry)
    node = overlay(profile, entry)
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
    catalogue = _catalogue(name, node, profile, upstream.host if upstream else None)

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
        catalogue=catalogue,
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
        tasks=parse_body_form(node.child("body", None)),
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


def _catalogue(
    name: str, node: Node, profile: Profile | None, upstream_host: str | None
) -> Catalogue:
    objects = merge_objects(profile, node, profile.name if profile else name)
    operations = merge_operations(profile, node, objects)
    if profile is None and "allow" not in node:
        node.fail(
            "is required for a provider without a profile: name the calls it may make, e.g. "
            "'POST api.example.com/v1/generate' ('* api.example.com/**' opens every call)",
            "allow",
        )
    allow = parse_allow(node, operations, (BROWSER,), upstream_host)
    if not allow:
        node.fail("allows nothing: list operations, or 'browser' for the profile's", "allow")
    return Catalogue(operations, objects, allow, profile.name if profile else None)


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
        methods=frozenset(m.upper() for m in node.texts("methods", tuple(DEFAULT_METHODS))),
        hosts=frozenset(h.lower() for h in node.texts("hosts", ())),
        token_urls=node.texts("token_urls", TOKEN_URLS),
        max_token_seconds=node.integer("max_token_seconds", MAX_TOKEN_SECONDS, minimum=1),
    )
    node.finish()
    return endpoints
