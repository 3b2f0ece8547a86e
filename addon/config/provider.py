"""One provider of rules.yaml (`providers.<name>`): how requests reach it, where they may go,
its key, and the sections (auth, limits, validation, transport, cors) that apply to it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, StrictStr

from addon.config.auth import TOKEN, AuthSpec, HeaderName
from addon.config.budget import Budget, BudgetSpec, Price
from addon.config.cors import NO_CORS, Cors, CorsPolicy
from addon.config.credential import Credential
from addon.config.limits import Limits, LimitSpec
from addon.config.model import ONE_OR_MANY, Positive, Text, Texts, Where, fail, matching, section
from addon.config.operations import (
    BROWSER,
    Catalogue,
    ObjectEntry,
    OperationEntry,
    build_allow,
    build_objects,
    build_operations,
)
from addon.config.ownership import Ownership, OwnershipSpec, layer_ownership
from addon.config.profiles import Profile, merge_operations, select
from addon.config.tasks import TaskForm
from addon.config.transport import TransportSpec
from addon.config.validation import ValidationSpec

DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_PREFIX = re.compile(r"(/[A-Za-z0-9\-._~]+)+")


def _methods(methods: frozenset[str]) -> frozenset[str]:
    upper = frozenset(m.upper() for m in methods)
    if bad := sorted(m for m in upper if not TOKEN.fullmatch(m) or m in ("CONNECT", "TRACE")):
        fail(f"'{bad[0]}' is not a method keyrelay forwards")
    return upper


def _lower_all(raw: Any) -> Any:
    raw = [raw] if isinstance(raw, str) else raw
    return [x.lower() if isinstance(x, str) else x for x in raw] if isinstance(raw, list) else raw


Hosts = Annotated[
    frozenset[str], BeforeValidator(_lower_all, json_schema_input_type=str | list[str])
]
Methods = Annotated[frozenset[StrictStr], ONE_OR_MANY, AfterValidator(_methods)]


# fal's token endpoint: a token for apps outside the endpoint allowlist would get around it.
TOKEN_URLS = ("rest.fal.ai/tokens/", "rest.alpha.fal.ai/tokens/")
MAX_TOKEN_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/v1": the rest of the client's path is appended


@section
class EndpointAllowlist:
    """Only these endpoint ids (fal model ids like `fal-ai/flux/dev`) may be run or read.

    A request that runs an endpoint names it whole (`/fal-ai/flux/dev`); one that reads or
    cancels a queued request names only its app (`/fal-ai/flux/requests/<id>/status`: fal's
    status URLs drop the endpoint's sub-path), so there the app of an allowed endpoint is enough.
    """

    allow: tuple[Annotated[Text, AfterValidator(_endpoint_id)], ...]
    methods: Methods = DEFAULT_METHODS
    hosts: Annotated[
        frozenset[str], BeforeValidator(_lower_all, json_schema_input_type=str | list[str])
    ] = frozenset()
    # POSTs that mint tokens for allowed apps only (a body rule: addon/guard/token_grants.py)
    token_urls: Texts = TOKEN_URLS
    max_token_seconds: Positive = MAX_TOKEN_SECONDS
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


def _endpoint_id(endpoint: str) -> str:
    if not endpoint or endpoint.startswith("/") or ".." in endpoint.split("/"):
        fail("an endpoint id looks like 'fal-ai/flux/dev'")
    return endpoint


Prefix = Annotated[Text, matching(_PREFIX, "must look like /api/name (no trailing '/', no query)")]


@section
class Match:
    """How requests reach a provider: a path prefix, or a target named in a header or query."""

    prefix: Prefix | None = None
    header: HeaderName | None = None
    query: Text | None = None
    paths: tuple[Prefix, ...] = ()  # where a request without a target is a 400, not a 404

    def __post_init__(self) -> None:
        if self.prefix is None and self.header is None and self.query is None:
            fail("needs a prefix, a header or a query parameter")
        if self.prefix is not None and (self.header or self.query):
            fail("a provider is matched either by prefix or by target header/query, not both")
        if self.paths and self.prefix is not None:
            fail("paths only applies to header-routed providers", "paths")


def _text_values(raw: Any) -> Any:
    """Header values may be written as numbers (`anthropic-version: 2023-06-01` is a string,
    but `x-api-version: 2` is not)."""
    if isinstance(raw, dict):
        return {
            k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in raw.items()
        }
    return raw


HeaderMap = Annotated[dict[HeaderName, Text], BeforeValidator(_text_values)]


@section
class RequestHeaders:
    """`request_headers:` which client headers go upstream, and which keyrelay sets."""

    forward: Texts | None = None  # globs; None forwards everything not stripped
    strip: Texts = ()
    set: HeaderMap = Field(default_factory=dict)
    default: HeaderMap = Field(default_factory=dict)

    def policy(self) -> HeaderPolicy:
        return HeaderPolicy(
            forward=tuple(h.lower() for h in self.forward) if self.forward is not None else None,
            strip=frozenset(h.lower() for h in self.strip),
            set=tuple(self.set.items()),
            default=tuple(self.default.items()),
        )


@section
class Defaults:
    """`defaults:` sections a provider without its own inherits (cors and ownership: key by key)."""

    auth: AuthSpec | None = None
    limits: Limits | None = None
    validation: ValidationSpec | None = None
    transport: TransportSpec | None = None
    cors: Cors | None = None
    ownership: Ownership | None = None


@section
class ProviderEntry(Defaults):
    """A provider as rules.yaml (or a built-in profile, addon/profiles/) writes it. Every key is
    optional here: a profile supplies what the entry leaves out, and `parse_provider` says what
    a provider without one still needs. Its own sections (those of `Defaults`) win over those
    under `defaults:`."""

    profile: Text | None = None  # a built-in profile, `none`, or (absent) the provider's name
    match: Match | None = None
    upstream: Text | None = None  # prefix-matched providers: the URL the rest of a path goes to
    credential: Credential | None = None
    request_headers: RequestHeaders | None = None
    methods: Methods | None = None
    allow: Texts | None = None  # operations (by name), `browser`, or `METHODS host/path`
    objects: dict[str, ObjectEntry] | None = None
    operations: dict[str, OperationEntry] | None = None
    endpoints: EndpointAllowlist | None = None
    prices: tuple[Price, ...] | None = None  # USD, first match wins (config/budget.py)
    budget: Budget | None = None  # this provider's own share
    body: TaskForm | None = None  # `form: tasks`: every call is an array of tasks


def parse_provider(name: str, raw: dict[str, Any], defaults: Defaults, where: Where) -> Provider:
    """A provider from its entry in rules.yaml, over its profile's, and `defaults:`."""
    if not _NAME.fullmatch(name):
        where.fail("a provider name must be lower-case letters, digits, '-' or '_'")
    profile = select(name, raw.get("profile"), where)
    merged = {**profile.entry, **raw} if profile else raw
    entry: ProviderEntry = where.read(ProviderEntry, merged)
    if entry.match is None:
        where.fail("is required", "match")
    if entry.credential is None:
        where.fail("is required", "credential")
    match = entry.match
    upstream = None
    if match.prefix is not None:
        if entry.upstream is None:
            where.fail("is required", "upstream")
        upstream = _upstream(entry.upstream, where)
    elif entry.upstream is not None:
        where.fail("applies to prefix-matched providers only", "upstream")
    base_ownership = _ownership(defaults.ownership)
    return Provider(
        name=name,
        credential=entry.credential,
        headers=(entry.request_headers or RequestHeaders()).policy(),
        methods=entry.methods if entry.methods is not None else DEFAULT_METHODS,
        prefix=match.prefix,
        upstream=upstream,
        target_header=match.header,
        target_query=match.query,
        target_paths=match.paths,
        catalogue=_catalogue(name, raw, entry, profile, upstream, where),
        endpoints=entry.endpoints,
        auth=entry.auth or defaults.auth or AuthSpec(),
        limits=(entry.limits or defaults.limits or Limits()).spec(),
        validation=entry.validation or defaults.validation or ValidationSpec(),
        transport=entry.transport or defaults.transport or TransportSpec(),
        # Keys a provider's cors leaves out come from defaults.cors (e.g. credentials only).
        cors=(entry.cors or Cors()).layer((defaults.cors or Cors()).layer()),
        ownership=layer_ownership(
            raw.get("ownership"), base_ownership, where.file, where.key("ownership")
        ),
        prices=entry.prices or (),
        budget=entry.budget or BudgetSpec(),
        tasks=entry.body,
    )


def _ownership(written: Ownership | None) -> OwnershipSpec:
    """`defaults.ownership`: what a provider's own leaves out (the keys it omits: defaults)."""
    if isinstance(written, bool):
        return OwnershipSpec(written)
    return written or OwnershipSpec()


def _upstream(url: str, where: Where) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        where.fail("must be an http(s) URL with a host", "upstream")
    if parts.query or parts.fragment or parts.username or parts.password:
        where.fail("must not have a query, fragment or user information", "upstream")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        where.fail("has an invalid port", "upstream")
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _catalogue(
    name: str,
    raw: dict[str, Any],
    entry: ProviderEntry,
    profile: Profile | None,
    upstream: Upstream | None,
    where: Where,
) -> Catalogue:
    scope = profile.name if profile else name
    own_objects = build_objects(_own(raw, entry, "objects"), scope, where.at("objects"))
    objects = {**(profile.objects if profile else {}), **own_objects}
    own = build_operations(_own(raw, entry, "operations"), objects, where.at("operations"))
    operations = merge_operations(profile, own)
    if profile is None and entry.allow is None:
        where.fail(
            "is required for a provider without a profile: name the calls it may make, e.g. "
            "'POST api.example.com/v1/generate' ('* api.example.com/**' opens every call)",
            "allow",
        )
    upstream_host = upstream.host if upstream else None
    allow = build_allow(entry.allow or (BROWSER,), operations, upstream_host, where.at("allow"))
    if not allow:
        where.fail("allows nothing: list operations, or 'browser' for the profile's", "allow")
    return Catalogue(operations, objects, allow, profile.name if profile else None)


def _own(raw: dict[str, Any], entry: ProviderEntry, key: str) -> dict[str, Any]:
    """The entry's own objects or operations (a profile's are merged by name, not replaced)."""
    return (getattr(entry, key) or {}) if key in raw else {}
