"""(method, path, headers) -> Route | Refusal. Pure: knows nothing of mitmproxy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from addon.config.operations import Operation
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.memo import Memo
from addon.problems import Refusal
from addon.targets import Target, TargetError, normalise_path, parse_target, path_under


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent upstream
    operation: Operation | None = None  # what the profile knows the call as, if anything

    @property
    def authority(self) -> str:
        """host[:port] as the Host header carries it: the port only when not the scheme's."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


_SHOWN = 200  # characters of a refused path quoted in the problem
_REMEMBERED = 1024  # routing decisions remembered at most...
_REMEMBERED_BYTES = 512  # ...each for a request line and target headers this long at most


class Router:
    """Routing tables compiled once per rules load, so a request costs a few lookups."""

    def __init__(self, rules: Rules) -> None:
        self.header_routed = rules.header_routed()
        self.prefixed = rules.prefixed()
        # A decision depends on the method, the target and the target headers alone, and
        # Routes and Refusals are immutable: the same request line is decided once.
        self._target_headers = tuple(p.target_header for p in self.header_routed if p.target_header)
        self._decided: Memo[tuple[str | None, ...], Route | Refusal] = Memo(
            _REMEMBERED, _REMEMBERED_BYTES
        )

    def route(self, method: str, path: str, header: Callable[[str], str | None]) -> Route | Refusal:
        """`path` is the request target as received (path and query); `header` looks up by name."""
        key = (method, path, *map(header, self._target_headers))
        decided = self._decided.get(key)
        if decided is None:
            decided = self._route(method, path, header)
            self._decided.remember(key, decided, sum(len(part or "") for part in key))
        return decided

    def _route(
        self, method: str, path: str, header: Callable[[str], str | None]
    ) -> Route | Refusal:
        raw_path, _, query = path.partition("?")
        for provider in self.header_routed:
            target = _target_of(provider, query, header)
            if target is not None:
                return _check(method, provider, target)
            if any(path_under(raw_path, p) for p in provider.target_paths):
                return Refusal(
                    400,
                    "missing-target",
                    f"{provider.name} requests need a target URL in the {_target_names(provider)}",
                )
        try:
            norm = normalise_path(raw_path)
        except TargetError:
            return Refusal(400, "malformed-path", "the request path or query is malformed")
        # The query goes upstream as sent: no byte a request line could be split on.
        if not query.isascii() or any(c <= " " or c in "#\x7f" for c in query):
            return Refusal(400, "malformed-path", "the request path or query is malformed")
        for provider in self.prefixed:
            assert provider.prefix and provider.upstream
            if path_under(norm, provider.prefix):
                up = provider.upstream
                rest = norm[len(provider.prefix) :]
                upstream_target = Target(up.host, (up.base_path + rest) or "/", query)
                return _admit(method, provider, up.scheme, up.port, upstream_target)
        return Refusal(404, "no-route", "no provider matches this request")


def _target_of(provider: Provider, query: str, header: Callable[[str], str | None]) -> str | None:
    if provider.target_header and (value := header(provider.target_header)) is not None:
        return value
    if provider.target_query and query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == provider.target_query:
                return value
    return None


def _target_names(provider: Provider) -> str:
    names = []
    if provider.target_header:
        names.append(f"{provider.target_header} header")
    if provider.target_query:
        names.append(f"{provider.target_query} query parameter")
    return " or the ".join(names)


def _check(method: str, provider: Provider, raw: str) -> Route | Refusal:
    if not raw.strip():
        return Refusal(400, "missing-target", f"the {_target_names(provider)} is empty")
    try:
        target = parse_target(raw)
    except TargetError as e:
        return Refusal(412, "target-invalid", f"the {provider.name} target cannot be used: {e}")
    if not provider.catalogue.knows_host(target.host):
        return Refusal(
            412, "target-not-allowed", f"the target is not an allowed {provider.name} URL"
        )
    return _admit(method, provider, "https", 443, target)


def _admit(
    method: str, provider: Provider, scheme: str, port: int, target: Target
) -> Route | Refusal:
    """The route, if `allow:` opens the call (and `methods:` and `endpoints:` let it pass)."""
    if refusal := _method_allowed(method, provider):
        return refusal
    catalogue = provider.catalogue
    operation = catalogue.operation(method, target.host, target.path)
    if not catalogue.allows(method, target.host, target.path, operation):
        return _not_allowed(method, provider, target, operation)
    if provider.endpoints and not provider.endpoints.allows(method, target.host, target.path):
        return Refusal(
            403,
            "endpoint-not-allowed",
            f"this {provider.name} endpoint is not in the endpoint allowlist",
        )
    return Route(provider, scheme, target.host, port, target.path_and_query, operation)


def _not_allowed(
    method: str, provider: Provider, target: Target, operation: Operation | None
) -> Refusal:
    """403 for a call no `allow:` entry opens, naming the entry that would open it."""
    path = target.path if len(target.path) <= _SHOWN else target.path[:_SHOWN] + "..."
    call = f"{method} {target.host}{path}"
    if operation is not None:
        what, entry = f"{call} ({operation.name}: {operation.kind})", operation.name
    else:
        what, entry = call, call
    return Refusal(
        403,
        "operation-not-allowed",
        f"{what} is not allowed for {provider.name}; to open it, add '{entry}' to "
        f"providers.{provider.name}.allow in rules.yaml",
    )


def _method_allowed(method: str, provider: Provider) -> Refusal | None:
    if method in provider.methods:
        return None
    allow = ", ".join(sorted(provider.methods))
    return Refusal(
        405,
        "method-not-allowed",
        f"{provider.name} does not allow {method}",
        headers=(("allow", allow),),
    )
