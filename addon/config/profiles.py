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

from addon.config.node import ConfigError, Node
from addon.config.operations import ObjectSpec, Operation, parse_objects, parse_operations

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
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(file, "", f"cannot be read: {e}") from e
    node = Node(data, file)
    objects = parse_objects(node.child("objects", None), name)
    operations = parse_operations(node.child("operations", None), objects)
    entry = {k: v for k, v in data.items() if k not in MERGED}
    return Profile(name, file, entry, objects, operations)


def select(name: str, node: Node) -> Profile | None:
    """The profile a provider entry selects: `profile:`, else the built-in of its own name."""
    chosen = node.text("profile", None)
    if chosen is None:
        return load(name) if name in builtin_names() else None
    if chosen == NONE:
        return None
    if chosen not in builtin_names():
        known = ", ".join(builtin_names())
        node.fail(f"'{chosen}' is not a built-in profile ({known}, or none)", "profile")
    return load(chosen)


def overlay(profile: Profile | None, node: Node) -> Node:
    """The provider entry with the profile's keys beneath it: what the entry sets wins."""
    if profile is None:
        return node
    merged = {**profile.entry, **node.value}
    layered = Node(merged, node.file, node.path)
    layered.raw("profile", None)  # read by select()
    return layered


def merge_objects(profile: Profile | None, node: Node, scope: str) -> dict[str, ObjectSpec]:
    own = parse_objects(node.child("objects", None), scope)
    return {**(profile.objects if profile else {}), **own}


def merge_operations(
    profile: Profile | None, node: Node, objects: dict[str, ObjectSpec]
) -> tuple[Operation, ...]:
    """The entry's own operations first (new ones, then the profile's with replacements in
    place): the first operation that matches a request is the one it is."""
    own = parse_operations(node.child("operations", None), objects)
    inherited = profile.operations if profile else ()
    replaced = {o.name: o for o in own}
    known = {o.name for o in inherited}
    return (
        *(o for o in own if o.name not in known),
        *(replaced.get(o.name, o) for o in inherited),
    )
