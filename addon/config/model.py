"""How rules.yaml is read: sections are pydantic dataclasses, strict about YAML's types.

Each section of the file is a frozen dataclass declared with `section`: its fields are the keys
a user may write, with their types, bounds and defaults. pydantic checks a mapping against it
(unknown keys refused, no "5" taken for 5, no "yes" for true) and the same classes publish the
JSON Schema editors use (`addon.config.schema`). What a key *means* beyond its type (a URL's
scheme, a header name's characters, one key that excludes another) is checked in the section's
own validators, raising `ValueError` with the words a user should read.

`read` turns pydantic's errors into `ConfigError`: `FILE: KEY: reason`, keyrelay's phrasing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, dataclass_transform

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration mistake; str() is 'FILE: KEY: reason'."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key or '(top level)'}: {reason}")


# libyaml's parser where PyYAML was built with it (the wheels are): the profiles are read at
# every start, and the pure-Python parser is the slower half of reading them.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """YAML as `yaml.safe_load` reads it (same types, same errors), faster."""
    return yaml.load(text, Loader=_YAML_LOADER)


# Sections are built on first use, not at import: a start pays only for what it reads.
_CONFIG = ConfigDict(extra="forbid", revalidate_instances="never", defer_build=True)


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def section[T](cls: type[T]) -> type[T]:
    """A section of rules.yaml: a frozen, slotted dataclass that refuses unknown keys. A key
    written with no value (`limits:` and nothing) is taken as not written."""
    cls._nulls_are_absent = model_validator(mode="before")(_drop_nulls)  # type: ignore[attr-defined]
    return pydantic_dataclass(frozen=True, slots=True, config=_CONFIG)(cls)  # type: ignore[return-value]


def _drop_nulls(cls: type, value: Any) -> Any:
    if isinstance(value, dict) and None in value.values():
        return {k: v for k, v in value.items() if v is not None}
    return value


# Scalars as YAML writes them: strict, so that a quoted "5" or a `yes` is a mistake, not a value.
Text = StrictStr
Flag = StrictBool
Whole = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]
Number = Annotated[float, Strict(), Field(ge=0)]  # an int is a number too


def one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# Where a list of strings is read, one string stands for a list of one (and the schema says so).
ONE_OR_MANY = BeforeValidator(one_or_many, json_schema_input_type=str | list[str])
# A string or a list of strings: `models: gpt-4o` is `models: [gpt-4o]`.
Texts = Annotated[tuple[StrictStr, ...], ONE_OR_MANY]

TEXT = WithJsonSchema({"type": "string"})


def from_text(parse: Callable[[str], Any], quote: bool = True) -> PlainValidator:
    """A value written as a string and parsed by `parse` (a pattern, an origin, a rate), whose
    ValueError becomes the key's reason: `'<text>': <why>` (`quote`), else just why."""

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            fail(f"must be a string, not {kind_of(value)}")
        try:
            return parse(value)
        except Refused:
            raise
        except ValueError as e:
            fail(f"'{value}': {e}" if quote else str(e))

    return PlainValidator(check)


def matching(pattern: re.Pattern[str], reason: str) -> AfterValidator:
    """A string the whole of which `pattern` matches; else `reason`."""

    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            fail(reason)
        return text

    return AfterValidator(check)


def _network(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ip_network(text.strip(), strict=False)
    except ValueError:
        fail("is not an address or a network (CIDR)")


# Addresses or networks (CIDR): `10.0.0.0/8`, `127.0.0.1`.
Networks = Annotated[
    tuple[Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)], ...],
    ONE_OR_MANY,
]

_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(i?b?)\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3}


def parse_size(value: Any) -> Any:
    """A byte count: 1048576, '1 MiB' (1024-based), '1 MB' (1000-based), '1m' (mitmproxy's
    notation: 1024-based). Anything else is left for the type check to refuse."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value
    if isinstance(value, int):
        return value
    found = _SIZE.fullmatch(value)
    if found is None:
        raise ValueError("must be a byte count like 1048576, '100 MiB' or '4MB'")
    count, power, suffix = int(found[1]), _POWERS[found[2].lower()], found[3].lower()
    base = 1000 if suffix == "b" and power else 1024
    return count * base**power


Size = Annotated[
    StrictInt,
    BeforeValidator(parse_size),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+\s*([kKmMgG]([iI]?[bB])?)?\s*$"},
            ],
            "description": "bytes: 1048576, '100 MiB' (1024-based), '4 MB' (1000-based)",
        }
    ),
]


def file_of(info: ValidationInfo) -> str:
    """The rules file being read (validators resolve relative paths beside it)."""
    context = info.context or {}
    return str(context.get("file", ""))


def beside(info: ValidationInfo, path: str) -> Path:
    """A path from the rules file: relative ones are taken from the file's directory."""
    return Path(file_of(info)).resolve().parent / Path(path).expanduser()


@dataclasses.dataclass(frozen=True, slots=True)
class Where:
    """A place in a config file, for the checks that span sections (names, cross-references)."""

    file: str
    path: str = ""

    def key(self, name: str) -> str:
        if not name:
            return self.path
        if name.startswith("[") or not self.path:
            return f"{self.path}{name}"
        return f"{self.path}.{name}"

    def at(self, name: str) -> Where:
        return Where(self.file, self.key(name))

    def fail(self, reason: str, name: str = "") -> NoReturn:
        raise ConfigError(self.file, self.key(name), reason)

    def read(self, kind: Any, value: Any, name: str = "") -> Any:
        return read(kind, value, self.file, self.key(name))


class Refused(ValueError):
    """A validator's refusal; `key` names the key within the value checked that is wrong."""

    def __init__(self, reason: str, key: str = "") -> None:
        super().__init__(reason)
        self.key = key


def fail(reason: str, key: str = "") -> NoReturn:
    """Refuse the value being checked, in a user's words; `key`: which of its keys is wrong (a
    check across keys runs on the whole section, but the error names the key to fix)."""
    raise Refused(reason, key)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(kind: Any) -> TypeAdapter[Any]:
    found = _ADAPTERS.get(kind)
    if found is None:
        found = _ADAPTERS[kind] = TypeAdapter(kind)
    return found


def read[T](kind: type[T] | Any, value: Any, file: str, path: str = "") -> T:
    """`value` (parsed YAML) as `kind`, or a ConfigError naming the first mistake's key."""
    try:
        return adapter(kind).validate_python(value, context={"file": file})  # type: ignore[no-any-return]
    except ValidationError as e:
        # A mistake in what was written says more than a key left out: it comes first.
        errors = e.errors(include_url=False)
        error = min(errors, key=lambda error: error["type"] in ("missing", "missing_argument"))
        refused = (error.get("ctx") or {}).get("error")
        inner = (refused.key,) if isinstance(refused, Refused) and refused.key else ()
        raise ConfigError(file, _key(path, (*error["loc"], *inner)), _reason(error)) from None


def over[T](base: T, raw: Mapping[str, Any], file: str, path: str) -> T:
    """`base` with the keys `raw` writes replaced by their values: a provider's section over the
    one under `defaults:` (what it leaves out is inherited)."""
    given: T = read(type(base), raw, file, path)
    return dataclasses.replace(base, **{k: getattr(given, k) for k in raw})  # type: ignore[type-var]


def _key(path: str, loc: tuple[int | str, ...]) -> str:
    key = path
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif not _is_branch(part):
            key = f"{key}.{part}" if key else str(part)
    return key


def _is_branch(part: str) -> bool:
    """pydantic names the member of a union it tried (`function-before[...]`, `str`, a tag like
    `<env>`): not a key."""
    return (
        "[" in part
        or part.startswith("<")
        or part in ("str", "bool", "int", "float", "list", "dict")
    )


_KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    type(None): "nothing",
}


def kind_of(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


# What a value of the wrong type should have been: "must be a list, not a mapping".
_WANTED = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "dataclass_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}
_REASONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda e: "is required",
    "missing_argument": lambda e: "is required",
    "unexpected_keyword_argument": lambda e: "unknown key",
    "extra_forbidden": lambda e: "unknown key",
    "int_from_float": lambda e: f"must be a whole number, not {e['input']}",
    "greater_than_equal": lambda e: f"must be at least {e['ctx']['ge']:g}",
    "greater_than": lambda e: f"must be more than {e['ctx']['gt']:g}",
    "less_than_equal": lambda e: f"must be at most {e['ctx']['le']:g}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}".replace("'", ""),
    "value_error": lambda e: str(e["ctx"]["error"]),
}


def _reason(error: Mapping[str, Any]) -> str:
    if (wanted := _WANTED.get(error["type"])) is not None:
        return f"must be {wanted}, not {kind_of(error['input'])}"
    explain = _REASONS.get(error["type"])
    return explain(error) if explain else str(error["msg"])
