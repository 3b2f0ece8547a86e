"""The key-source parts of a provider's `credential:` section, as frozen values.

key: {env: NAME} | {env: [ID, SECRET]} | {file: PATH} | {command: ARGV, refresh: S}
     (or a list of those: the first that has a key wins)
pool: {keys: [SOURCE, ...], cooldown: 60, max_cooldown: 900}
tenants: {file: PATH | redis_hash: NAME, claim: CLAIM, cache: 60, fallback: refuse|shared}
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addon.config.node import Node

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCE_FORMS = "{env: NAME}, {env: [ID, SECRET]}, {file: PATH} or {command: [PROGRAM, ARG...]}"


@dataclass(frozen=True, slots=True)
class EnvSource:
    """A key read from one environment variable, or several joined with ':' (fal's id:secret)."""

    names: tuple[str, ...]

    def read(self, env: dict[str, str]) -> str | None:
        values = [env.get(name, "").strip() for name in self.names]
        return ":".join(values) if all(values) else None

    def describe(self) -> str:
        return " and ".join(self.names)

    def placeholder(self) -> str:
        return f"<{self.names[0]}>"


@dataclass(frozen=True, slots=True)
class FileSource:
    """A key in a file (a Docker/Kubernetes secret, a Vault agent sink), re-read when it changes."""

    path: Path
    names: tuple[str, ...] = ()  # no environment variable (replay mode replaces env names)

    def describe(self) -> str:
        return f"its key file ({self.path.name})"

    def placeholder(self) -> str:
        return f"<key file {self.path.name}>"


@dataclass(frozen=True, slots=True)
class CommandSource:
    """A key printed by a program (a secrets manager's CLI). Run in the background every
    `refresh` seconds, never per request; its output is the key."""

    argv: tuple[str, ...]
    refresh: float = 300.0
    timeout: float = 10.0
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        # Only the program's name: arguments may name secret paths.
        return f"its key command ({Path(self.argv[0]).name})"

    def placeholder(self) -> str:
        return f"<key command {Path(self.argv[0]).name}>"


KeySource = EnvSource | FileSource | CommandSource


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Several keys of one provider, chosen round-robin; one answered 429/401 rests a while."""

    sources: tuple[KeySource, ...]
    cooldown: float = 60.0  # when a 429 has no usable retry-after, and after a 401
    max_cooldown: float = 900.0  # an upstream's retry-after is honoured up to this


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """Per-tenant keys: the tenant is the caller's identity (the guard's), or one JWT claim."""

    file: Path | None = None  # YAML mapping tenant -> key, re-read when it changes
    redis_hash: str | None = None  # a Redis hash tenant -> key (limits_backend's connection)
    claim: str | None = None  # None: the identity's name
    cache: float = 60.0  # seconds a Redis answer (key or none) is reused
    fallback: str = "refuse"  # a tenant without a key: "refuse" (403) or "shared" (key/pool)


def parse_sources(node: Node, name: str) -> tuple[KeySource, ...]:
    """`name`: one source or a list of them."""
    raw = node.raw(name)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        node.fail("needs at least one source", name)
    return tuple(_source(node, f"{name}[{i}]", item) for i, item in enumerate(items))


def _source(parent: Node, key: str, value: Any) -> KeySource:
    if not isinstance(value, dict):
        parent.fail(f"a key source is {SOURCE_FORMS}", key)
    node = Node(value, parent.file, parent.key(key))
    kinds = [k for k in ("env", "file", "command") if k in value]
    if len(kinds) != 1:
        node.fail(f"a key source is {SOURCE_FORMS}")
    source: KeySource
    if kinds[0] == "env":
        names = node.texts("env")
        if not names or not all(_ENV_NAME.fullmatch(n) for n in names):
            node.fail("must name one or more environment variables", "env")
        source = EnvSource(tuple(names))
    elif kinds[0] == "file":
        source = FileSource(_relative(node, node.text("file")))
    else:
        source = _command(node)
    node.finish()
    return source


def _command(node: Node) -> CommandSource:
    raw = node.raw("command")
    if isinstance(raw, str):
        argv = shlex.split(raw)  # split like a shell, but never run by one
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        argv = list(raw)
    else:
        node.fail("must be a list of strings (program and arguments) or a string", "command")
    if not argv or not argv[0]:
        node.fail("needs a program", "command")
    return CommandSource(
        tuple(argv),
        refresh=node.number("refresh", 300.0, minimum=1),
        timeout=node.number("timeout", 10.0, minimum=0.1),
    )


def parse_pool(node: Node | None) -> PoolSpec | None:
    if node is None:
        return None
    sources = parse_sources(node, "keys")
    if len(sources) < 2:
        node.fail("a pool needs at least two keys", "keys")
    spec = PoolSpec(
        sources,
        cooldown=node.number("cooldown", 60.0, minimum=1),
        max_cooldown=node.number("max_cooldown", 900.0, minimum=1),
    )
    if len(set(sources)) != len(sources):
        node.fail("lists the same source twice", "keys")
    node.finish()
    return spec


def parse_tenants(node: Node | None) -> TenantSpec | None:
    if node is None:
        return None
    file, redis_hash = node.text("file", None), node.text("redis_hash", None)
    if (file is None) == (redis_hash is None):
        node.fail("needs exactly one of file: PATH or redis_hash: NAME")
    fallback = node.text("fallback", "refuse")
    if fallback not in ("refuse", "shared"):
        node.fail("must be refuse or shared", "fallback")
    spec = TenantSpec(
        file=_relative(node, file) if file is not None else None,
        redis_hash=redis_hash,
        claim=node.text("claim", None),
        cache=node.number("cache", 60.0),
        fallback=fallback,
    )
    node.finish()
    return spec


def _relative(node: Node, path: str) -> Path:
    """Relative paths are taken from the rules file's directory, like the .env beside it."""
    return Path(node.file).resolve().parent / Path(path).expanduser()
