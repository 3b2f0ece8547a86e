"""Provider keys: where they come from, how they are sent, and which client credentials go."""

from __future__ import annotations

import re
from dataclasses import dataclass

from addon.config_node import Node

# Headers that carry a credential in one provider's API or another. The client never
# chooses the key: all of them are removed before keyrelay sets its own.
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "xi-api-key",
        "x-goog-api-key",
        "x-fal-key",
        "cookie",
    }
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class EnvSource:
    """A key read from one environment variable, or several joined with ':' (fal's id:secret)."""

    names: tuple[str, ...]

    def read(self, env: dict[str, str]) -> str | None:
        values = [env.get(name, "").strip() for name in self.names]
        return ":".join(values) if all(values) else None

    def describe(self) -> str:
        return " and ".join(self.names)


@dataclass(frozen=True, slots=True)
class Credential:
    header: str
    format: str  # with one "{key}"
    sources: tuple[EnvSource, ...]  # alternatives, first available wins

    def resolve(self, env: dict[str, str]) -> str | None:
        """The key from the first source that is fully set, or None."""
        for source in self.sources:
            if (key := source.read(env)) is not None:
                return key
        return None

    def header_value(self, key: str) -> str:
        return self.format.replace("{key}", key)

    def describe_missing(self) -> str:
        return " or ".join(s.describe() for s in self.sources)


def parse_credential(node: Node) -> Credential:
    header = node.text("header").lower()
    fmt = node.text("format", "{key}")
    if fmt.count("{key}") != 1:
        node.fail("must contain '{key}' exactly once", "format")
    raw = node.raw("key")
    alternatives = raw if isinstance(raw, list) else [raw]
    sources = tuple(_source(node, f"key[{i}]", alt) for i, alt in enumerate(alternatives))
    if not sources:
        node.fail("needs at least one source", "key")
    node.finish()
    return Credential(header, fmt, sources)


def _source(node: Node, key: str, value: object) -> EnvSource:
    if not isinstance(value, dict) or set(value) != {"env"}:
        node.fail("a key source is {env: NAME} or {env: [ID, SECRET]}", key)
    names = value["env"]
    names = [names] if isinstance(names, str) else names
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in names)
    ):
        node.fail("env must name one or more environment variables", key)
    return EnvSource(tuple(names))
