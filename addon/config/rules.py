"""rules.yaml -> frozen dataclasses. Every mistake is reported with file, key and reason.

The config layer: this package imports nothing from the runtime. Each section has its module
(provider.py, cors.py, transport.py, auth.py, limits.py, credential.py, validation.py, admin.py);
this one reads the file and assembles them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator

from addon import client_address
from addon.config import envfile
from addon.config.admin import Admin
from addon.config.alerts import TopBudget, TopBudgetIn
from addon.config.cors import NO_CORS, Cors, CorsPolicy
from addon.config.credential import CLIENT_CREDENTIAL_HEADERS
from addon.config.limits import BackendSpec
from addon.config.model import ConfigError, Networks, Text, Where, fail, load_yaml, section
from addon.config.provider import Defaults, Provider, ProviderEntry, parse_provider

RulesError = ConfigError


@dataclass(frozen=True, slots=True)
class Rules:
    source: Path
    providers: tuple[Provider, ...]
    env: dict[str, str] = field(repr=False)
    admin: Admin = field(default_factory=Admin)  # /_keyrelay/ endpoints: who may read them
    limits_backend: BackendSpec = field(default_factory=BackendSpec)  # Redis: shared
    cors: CorsPolicy = NO_CORS  # `defaults.cors`: for paths no provider claims
    budget: TopBudget = field(default_factory=TopBudget)  # USD per identity, all providers
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


def _server_name(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not _SERVER_NAME.fullmatch(name):
        fail(
            f"'{name}' is not a host name (app.example.com, *.example.com or an IPv4 "
            "address; no scheme or port)"
        )
    return name


@section
class Server:
    # Proxies (load balancers) whose X-Forwarded-For / Forwarded name the client: nobody's,
    # unless listed.
    trusted_proxies: Networks = ()


@section
class RulesDocument:
    """rules.yaml as written: `python -m addon.config.schema` publishes it as a JSON Schema."""

    providers: dict[str, ProviderEntry]
    defaults: Defaults = field(default_factory=Defaults)
    admin: Admin = field(default_factory=Admin)
    limits_backend: BackendSpec = field(default_factory=BackendSpec)
    budget: TopBudgetIn | None = None  # USD per identity, across providers; its alerts
    server_names: tuple[Annotated[Text, AfterValidator(_server_name)], ...] = ()
    server: Server = field(default_factory=Server)

    def __post_init__(self) -> None:
        if not self.providers:
            fail("needs at least one provider", "providers")


def load(path: Path, environ: dict[str, str]) -> Rules:
    """Read and validate a rules file; keys come from `environ` over a `.env` beside it."""
    file = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(file, "", f"cannot be read: {e.strerror}") from e
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(file, where, f"is not valid YAML: {getattr(e, 'problem', e)}") from e
    env = {**envfile.load(path.parent / ".env"), **environ}
    return parse(data, path, env)


def parse(data: Any, path: Path, env: dict[str, str]) -> Rules:
    """Rules from a parsed rules file (`path` names it in errors and places relative files)."""
    here = Where(str(path))
    document: RulesDocument = here.read(RulesDocument, {} if data is None else data)
    providers = tuple(
        parse_provider(name, raw or {}, document.defaults, here.at(f"providers.{name}"))
        for name, raw in data["providers"].items()
    )
    _check_unique(here, providers)
    return Rules(
        path,
        providers,
        env,
        document.admin,
        limits_backend=document.limits_backend,
        cors=(document.defaults.cors or Cors()).layer(),
        budget=document.budget or TopBudget(),
        server_names=document.server_names,
        trusted_proxies=document.server.trusted_proxies,
    )


_SERVER_NAME = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


def _check_unique(here: Where, providers: tuple[Provider, ...]) -> None:
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
                here.fail(
                    f"'{claim}' is already claimed by {seen[claim]}", f"providers.{p.name}.match"
                )
            seen[claim] = p.name
