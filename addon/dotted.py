"""A value at a dotted place in parsed JSON (`session.model`, `data.id`): how profiles name the
fields of a body or an answer (an object's id, a minted key's model and lifetime)."""

from __future__ import annotations

from typing import Any


def at(data: Any, place: str) -> Any:
    """The value at `place`, or None where a step is missing or not a mapping."""
    for name in place.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data
