"""rules.yaml -> frozen dataclasses. Every mistake is reported with file, key and reason.

The config layer: this package imports nothing from the runtime. Each section has its module
(provider.py, cors.py, transport.py, auth.py, limits.py, credential.py, validation.py, admin.py);
this one reads the file and assembles them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from addon import client_address
from addon.config import envfile
from addon.config.admin import Admin, parse_admin
from addon.config.budget import BudgetSpec, parse_budget
from addon.config.cors import NO_CORS, CorsPolicy, parse_cors
from addon.config.credential import CLIENT_CREDENTIAL_HEADERS
from addon.config.limits import BackendSpec, parse_backend
from addon.config.node import ConfigError, Node
from addon.config.provider import Provider, parse_provider

RulesError = ConfigError


@dataclass(frozen=True, slots=True)
class Rules:
    source: Path
    providers: tuple[Provider, ...]
    env: dict[str, str] = field(repr=False)
    admin: Admin = field(default_factory=Admin)  # /_keyrelay/ endpoints: who may read them
    limits_backend: BackendSpec = field(default_factory=BackendSpec)  # Redis: shared
    cors: CorsPolicy = NO_CORS  # `defaults.cors`: for paths no provider claims
    budget: BudgetSpec = field(default_factory=BudgetSpec)  # USD per identity, all providers
    server_names: tuple[str, ...] = ()  # Host names answered besides loopback (lower-case)
    # Proxies (load balancers) whose X-Forwarded-For / Forwarded name the client (`server:`).
    trusted_proxies: tuple[client_address.Network, ...] = ()
    # Routing order, derived once here: CORS and the router look it up on every request.
    _prefixed: tuple[Provider, ...] = field(init=False, repr=False, compare=False)
    _header_routed: tuple[Provider, ...] = field(init=False, repr=False, compare=False)
    # Every header a client's credential may arrive in: a provider's API key headers, and the
    # header each provider's `auth:` reads keyrelay's own credential from. None goes upstream,
    # and each is masked wherever a flow is kept (mitmweb, saved flows), refused or not.
    credential_headers: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        own = {p.auth.header for p in self.providers}
        object.__setattr__(self, "credential_headers", CLIENT_CREDENTIAL_HEADERS | own)
        longest_first = sorted((p for p in self.providers if p.prefix), key=_longer_prefix_first)
        object.__setattr__(self, "_prefixed", tuple(longest_first))
        routed = tuple(p for p in self.providers if not p.prefix)
        object.__setattr__(self, "_header_routed", routed)

    def prefixed(self) -> tuple[Provider, ...]:
        """Prefix-routed providers, longest prefix first."""
        return self._prefixed

    def header_routed(self) -> tuple[Provider, ...]:
        return self._header_routed

    def watched_files(self) -> tuple[Path, ...]:
        """Files the rules read credentials of callers from: a change reloads the rules, so a
        token removed from its file stops working within a reload interval."""
        files: set[Path] = set()
        for provider in self.providers:
            auth = provider.auth
            if auth.tokens is not None and auth.tokens.file is not None:
                files.add(auth.tokens.file)
            if auth.jwt is not None:
                if auth.jwt.secret is not None and auth.jwt.secret.file is not None:
                    files.add(auth.jwt.secret.file)
                if auth.jwt.jwks_file is not None:
                    files.add(auth.jwt.jwks_file)
        return tuple(sorted(files))

    @property
    def keeps_books(self) -> bool:
        """Whether any budget or price is set: then every identity's spend is kept
        (addon/budget/), and `/_keyrelay/usage` shows it, budget or not."""
        return self.budget.active or any(p.budget.active or p.prices for p in self.providers)


def _longer_prefix_first(provider: Provider) -> int:
    return -len(provider.prefix or "")


def load(path: Path, environ: dict[str, str]) -> Rules:
    """Read and validate a rules file; keys come from `environ` over a `.env` beside it."""
    file = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(file, "", f"cannot be read: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(file, where, f"is not valid YAML: {getattr(e, 'problem', e)}") from e
    env = {**envfile.load(path.parent / ".env"), **environ}
    return parse(Node(data or {}, file), path, env)


def parse(root: Node, path: Path, env: dict[str, str]) -> Rules:
    defaults = root.child("defaults", None) or Node({}, root.file, "defaults")
    cors = parse_cors(defaults.child("cors", None))
    providers_node = root.child("providers")
    providers = tuple(
        parse_provider(name, providers_node.child(name), defaults)
        for name in list(providers_node.names())
    )
    defaults.finish()
    if not providers:
        root.fail("needs at least one provider", "providers")
    _check_unique(root, providers)
    admin = parse_admin(root.child("admin", None))
    limits_backend = parse_backend(root.child("limits_backend", None))
    budget = parse_budget(root, alerts=True)
    server_names = _server_names(root)
    trusted_proxies = _trusted_proxies(root.child("server", None))
    root.finish()
    return Rules(
        path,
        providers,
        env,
        admin,
        limits_backend=limits_backend,
        cors=cors,
        budget=budget,
        server_names=server_names,
        trusted_proxies=trusted_proxies,
    )


def _trusted_proxies(node: Node | None) -> tuple[client_address.Network, ...]:
    """`server: {trusted_proxies: [10.0.0.0/8, ...]}`: the peers whose forwarding headers are
    believed (a load balancer's): nobody's, unless listed."""
    if node is None:
        return ()
    networks = node.networks("trusted_proxies")
    node.finish()
    return networks


_SERVER_NAME = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


def _server_names(root: Node) -> tuple[str, ...]:
    """`server_names:` the Host names keyrelay answers besides loopback (DNS rebinding)."""
    names = tuple(name.strip().lower().rstrip(".") for name in root.texts("server_names", ()))
    for i, name in enumerate(names):
        if not _SERVER_NAME.fullmatch(name):
            root.fail(
                f"'{name}' is not a host name (app.example.com, *.example.com or an IPv4 "
                "address; no scheme or port)",
                f"server_names[{i}]",
            )
    return names


def _check_unique(root: Node, providers: tuple[Provider, ...]) -> None:
    seen: dict[str, str] = {}
    for p in providers:
        for claim in (
            p.prefix,
            p.target_header and f"header {p.target_header}",
            p.target_query and f"query {p.target_query}",
        ):
            if not claim:
                continue
            if claim in seen:
                root.fail(
                    f"'{claim}' is already claimed by {seen[claim]}", f"providers.{p.name}.match"
                )
            seen[claim] = p.name
