"""Built-in provider profiles (addon/profiles/<name>.yaml), and how rules.yaml overrides them.

A profile is a provider entry as rules.yaml would write it, plus what keyrelay knows about the
provider's API: its `objects` (what a caller creates and later names) and `operations` (method
and path, what each is for, whether a browser client calls it). Data, not code, so that a
provider written in rules.yaml has exactly the same powers as a built-in one, and one parser
reports every mistake with its file and key.

Overriding: a key the provider entry in rules.yaml sets replaces the profile's (whole: a
`match:` given replaces the profile's `match:`), except `objects` and `operations`, which are
merged by name (an entry of the same name replaces the profile's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from addon.config.model import ConfigError, Where, load_yaml
from addon.config.operations import (
    ObjectEntry,
    ObjectSpec,
    Operation,
    OperationEntry,
    build_objects,
    build_operations,
)

DIRECTORY = Path(__file__).resolve().parent.parent / "profiles"
NONE = "none"  # `profile: none`: a provider of rules.yaml's own, with no profile
MERGED = ("objects", "operations")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    file: str
    entry: dict[str, Any]  # the provider keys it sets (match, upstream, credential, ...)
    objects: dict[str, ObjectSpec]
    operations: tuple[Operation, ...]


def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in DIRECTORY.glob("*.yaml")))


@functools.cache
def load(name: str) -> Profile:
    """A built-in profile; read once per process (it ships with keyrelay)."""
    path = DIRECTORY / f"{name}.yaml"
    here = Where(str(path))
    try:
        data = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(here.file, "", f"cannot be read: {e}") from e
    objects = build_objects(
        here.read(dict[str, ObjectEntry], data.get("objects") or {}, "objects"),
        name,
        here.at("objects"),
    )
    entries = here.read(dict[str, OperationEntry], data.get("operations") or {}, "operations")
    operations = build_operations(entries, objects, here.at("operations"))
    entry = {k: v for k, v in data.items() if k not in MERGED}
    return Profile(name, here.file, entry, objects, operations)


def select(name: str, chosen: Any, where: Where) -> Profile | None:
    """The profile a provider entry selects: `profile:`, else the built-in of its own name."""
    if chosen is None:
        return load(name) if name in builtin_names() else None
    if chosen == NONE:
        return None
    if chosen not in builtin_names():
        known = ", ".join(builtin_names())
        where.fail(f"'{chosen}' is not a built-in profile ({known}, or none)", "profile")
    return load(chosen)


def merge_operations(profile: Profile | None, own: tuple[Operation, ...]) -> tuple[Operation, ...]:
    """The entry's own operations first (new ones, then the profile's with replacements in
    place): the first operation that matches a request is the one it is."""
    inherited = profile.operations if profile else ()
    replaced = {o.name: o for o in own}
    known = {o.name for o in inherited}
    return (
        *(o for o in own if o.name not in known),
        *(replaced.get(o.name, o) for o in inherited),
    )
