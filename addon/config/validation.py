"""The `validation:` section (under `defaults:` or a provider): body rules a request must pass.

    validation:
      models: ["claude-sonnet-4-*"]   # globs; a body naming another model is refused
      max_tokens: 4096                # and a body must name its token cap
      max_n: 1                        # results per request (n, best_of, num_images)
      max_body: 4MiB                  # bytes buffered for the checks above

The checks themselves are in addon/guard/body_rules.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from addon.config.node import Node

_SIZE = re.compile(r"(\d+)\s*(|b|kib|kb|k|mib|mb|m)", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
}


# Checking a body runs on the proxy's one event loop, and its cost grows with the body: JSON of
# many tiny objects takes 55-75 ms per MiB to parse (1.6-2.2 s for 30 MiB), stalling every other
# flow meanwhile. 4 MiB bounds a stall near 0.25 s and still holds a long prompt (1M tokens of
# text is about 4 MB); raise it where checked bodies carry files (audio, images in base64).
MAX_BODY = 4 << 20


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    models: tuple[str, ...] | None = None  # globs: `claude-sonnet-4-*`
    max_tokens: int | None = None  # also: a body must name its token cap
    max_n: int | None = None
    max_body: int = MAX_BODY  # bytes buffered for the checks above
    # Whether any rule above needs the body: asked a few times per request, so known once.
    reads_body: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reads = any(getattr(self, name) is not None for name in _RULES)
        object.__setattr__(self, "reads_body", reads)  # frozen: set once, here

    @property
    def rule_names(self) -> str:
        """The rules in force, for a problem's detail: "models, max_tokens"."""
        return ", ".join(name for name in _RULES if getattr(self, name) is not None)


_RULES = ("models", "max_tokens", "max_n")  # the fields that make the body be read


def parse_validation(node: Node | None) -> ValidationSpec:
    if node is None:
        return ValidationSpec()
    raw_size = node.raw("max_body", MAX_BODY)
    match = _SIZE.fullmatch(str(raw_size).strip())
    if isinstance(raw_size, bool) or not match:
        node.fail("must be a size like 32MiB, 512KiB or a number of bytes", "max_body")
    spec = ValidationSpec(
        models=node.texts("models", None),
        max_tokens=node.integer("max_tokens", None, minimum=1),
        max_n=node.integer("max_n", None, minimum=1),
        max_body=int(match[1]) * _UNITS[match[2].lower()],
    )
    node.finish()
    return spec
