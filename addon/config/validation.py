"""The `validation:` section (under `defaults:` or a provider): body rules a request must pass.

    validation:
      models: ["claude-sonnet-4-*"]   # globs; a body naming another model is refused
      max_tokens: 4096                # and a body must name its token cap
      max_n: 1                        # results per request (n, best_of, num_images)
      max_body: 4MiB                  # bytes buffered for the checks above

The checks themselves are in addon/guard/body_rules.py.
"""

from __future__ import annotations

from dataclasses import field

from addon.config.model import Positive, Size, Texts, section

# Checking a body runs on the proxy's one event loop, and its cost grows with the body: JSON of
# many tiny objects takes 55-75 ms per MiB to parse (1.6-2.2 s for 30 MiB), stalling every other
# flow meanwhile. 4 MiB bounds a stall near 0.25 s and still holds a long prompt (1M tokens of
# text is about 4 MB); raise it where checked bodies carry files (audio, images in base64).
MAX_BODY = 4 << 20


@section
class ValidationSpec:
    models: Texts | None = None  # globs: `claude-sonnet-4-*`
    max_tokens: Positive | None = None  # also: a body must name its token cap
    max_n: Positive | None = None
    max_body: Size = MAX_BODY  # bytes buffered for the checks above
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
