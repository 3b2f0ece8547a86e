"""The key-source parts of a provider's `credential:` section, as frozen values.

key: {env: NAME} | {env: [ID, SECRET]} | {file: PATH} | {command: ARGV, refresh: S}
     (or a list of those: the first that has a key wins)
pool: {keys: [SOURCE, ...], cooldown: 60, max_cooldown: 900}
tenants: {file: PATH | redis_hash: NAME, claim: CLAIM, cache: 60, fallback: refuse|shared}
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)

from addon.config.model import Number, Text, Texts, beside, fail, matching, section

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCE_FORMS = "{env: NAME}, {env: [ID, SECRET]}, {file: PATH} or {command: [PROGRAM, ARG...]}"


def _env_names(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names or not all(_ENV_NAME.fullmatch(n) for n in names):
        fail("must name one or more environment variables")
    return names


EnvName = Annotated[Text, matching(_ENV_NAME, "must name an environment variable")]


def _beside_rules(path: Any, info: ValidationInfo) -> Any:
    """Relative paths are taken from the rules file's directory, like the .env beside it."""
    return beside(info, path) if isinstance(path, str) else path


# A file named in rules.yaml: a string, resolved beside the rules file.
RulesPath = Annotated[Path, BeforeValidator(_beside_rules)]


@section
class EnvSource:
    """A key read from one environment variable, or several joined with ':' (fal's id:secret)."""

    env: Annotated[Texts, AfterValidator(_env_names)]

    @property
    def names(self) -> tuple[str, ...]:
        return self.env

    def read(self, env: dict[str, str]) -> str | None:
        values = [env.get(name, "").strip() for name in self.env]
        return ":".join(values) if all(values) else None

    def describe(self) -> str:
        return " and ".join(self.env)

    def placeholder(self) -> str:
        return f"<{self.env[0]}>"


@section
class FileSource:
    """A key in a file (a Docker/Kubernetes secret, a Vault agent sink), re-read when it changes."""

    file: RulesPath
    names: ClassVar[tuple[str, ...]] = ()  # no environment variable (replay replaces env names)

    def describe(self) -> str:
        return f"its key file ({self.file.name})"

    def placeholder(self) -> str:
        return f"<key file {self.file.name}>"


def _argv(raw: Any) -> Any:
    if isinstance(raw, str):
        raw = shlex.split(raw)  # split like a shell, but never run by one
    if not isinstance(raw, list | tuple) or not all(isinstance(a, str) for a in raw):
        fail("must be a list of strings (program and arguments) or a string")
    if not raw or not raw[0]:
        fail("needs a program")
    return tuple(raw)


@section
class CommandSource:
    """A key printed by a program (a secrets manager's CLI). Run in the background every
    `refresh` seconds, never per request; its output is the key."""

    command: Annotated[
        tuple[str, ...],
        BeforeValidator(_argv),
        Field(json_schema_extra={"anyOf": [{"type": "string"}, {"type": "array"}]}),
    ]
    refresh: Annotated[Number, Field(ge=1)] = 300.0
    timeout: Annotated[Number, Field(ge=0.1)] = 10.0
    names: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        # Only the program's name: arguments may name secret paths.
        return f"its key command ({Path(self.command[0]).name})"

    def placeholder(self) -> str:
        return f"<key command {Path(self.command[0]).name}>"


KeySource = EnvSource | FileSource | CommandSource
_FORMS: dict[str, type[KeySource]] = {
    "env": EnvSource,
    "file": FileSource,
    "command": CommandSource,
}


def _one_form(value: Any) -> Any:
    if isinstance(value, EnvSource | FileSource | CommandSource):
        return value
    if not isinstance(value, dict) or len([k for k in _FORMS if k in value]) != 1:
        fail(f"a key source is {SOURCE_FORMS}")
    return value


def _form(value: Any) -> str:
    """A source is told apart by its key, not by trying each form (whose errors would mislead)."""
    if not isinstance(value, dict):
        return f"<{next((k for k, kind in _FORMS.items() if isinstance(value, kind)), 'env')}>"
    return f"<{next((k for k in _FORMS if k in value), 'env')}>"


def _sources(value: Any) -> Any:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        fail("needs at least one source")
    return items


Source = Annotated[
    Annotated[EnvSource, Tag("<env>")]
    | Annotated[FileSource, Tag("<file>")]
    | Annotated[CommandSource, Tag("<command>")],
    Discriminator(_form),
    BeforeValidator(_one_form),
]
Sources = Annotated[
    tuple[Source, ...], BeforeValidator(_sources, json_schema_input_type=Source | list[Source])
]


def _two_or_more(keys: tuple[KeySource, ...]) -> tuple[KeySource, ...]:
    if len(keys) < 2:
        fail("a pool needs at least two keys")
    if len(set(keys)) != len(keys):
        fail("lists the same source twice")
    return keys


@section
class PoolSpec:
    """Several keys of one provider, chosen round-robin; one answered 429/401 rests a while."""

    keys: Annotated[Sources, AfterValidator(_two_or_more)]
    cooldown: Annotated[Number, Field(ge=1)] = 60.0  # after a 429 without retry-after, a 401
    max_cooldown: Annotated[Number, Field(ge=1)] = 900.0  # retry-after is honoured up to this


@section
class TenantSpec:
    """Per-tenant keys: the tenant is the caller's identity (the guard's), or one JWT claim."""

    file: RulesPath | None = None  # YAML mapping tenant -> key, re-read when it changes
    redis_hash: Text | None = None  # a Redis hash tenant -> key (limits_backend's connection)
    claim: Text | None = None  # None: the identity's name
    cache: Number = 60.0  # seconds a Redis answer (key or none) is reused
    fallback: Literal["refuse", "shared"] = "refuse"  # a tenant without a key: 403, or key/pool

    @model_validator(mode="after")
    def _one_table(self) -> TenantSpec:
        if (self.file is None) == (self.redis_hash is None):
            fail("needs exactly one of file: PATH or redis_hash: NAME")
        return self
