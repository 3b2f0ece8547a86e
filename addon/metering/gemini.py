"""What a Gemini request says about its cost: its body's `generationConfig`, its path's model.

Google's JSON reader takes a field in either spelling (`generationConfig.maxOutputTokens` or
`generation_config.max_output_tokens`), and reads 0 as unset (proto3): a cap of 0, or none,
lets the model make up to its own `outputTokenLimit`, thinking included. The model is named in
the path (`models/gemini-2.5-flash:generateContent`), not in the body.
"""

from __future__ import annotations

import re
from typing import Any

# The most output tokens any Gemini model makes (models.get's outputTokenLimit: 2.5 Pro and
# Flash, 3 Pro): what a request naming no cap is reserved for.
MAX_OUTPUT = 65_536
_CONFIG = ("generationConfig", "generation_config")
_CAP = ("maxOutputTokens", "max_output_tokens")
_COUNT = ("candidateCount", "candidate_count")
_PATH_MODEL = re.compile(r"(?:^|/)models/([^/:]+):[A-Za-z]+$")


def is_request(data: dict[str, Any]) -> bool:
    """A generateContent body (`contents`: no other token-priced provider's body has one, and
    one read as Gemini's is reserved more, never less)."""
    return "contents" in data


def output(data: dict[str, Any]) -> tuple[int, int]:
    """The most output tokens one candidate may make, and how many candidates: the largest of
    each spelling (the body is read as loosely as Google reads it, and never under-counted)."""
    configs = [c for name in _CONFIG if isinstance(c := data.get(name), dict)]
    caps = [v for c in configs for f in _CAP if type(v := c.get(f)) is int and v > 0]
    counts = [v for c in configs for f in _COUNT if type(v := c.get(f)) is int and v > 0]
    return max(caps, default=MAX_OUTPUT), max(counts, default=1)


def invalid_count(data: dict[str, Any]) -> str | None:
    """A cap or count Google would read but keyrelay would have to guess at: anything but a
    JSON integer of at least 0 (Google takes numeric strings too: refused, not guessed)."""
    for name in _CONFIG:
        config = data.get(name)
        if not isinstance(config, dict):
            continue
        for field in (*_CAP, *_COUNT):
            value = config.get(field)
            if value is not None and (type(value) is not int or value < 0):
                return f"{name}.{field} must be a whole number of at least 0"
    return None


def path_model(endpoint: str) -> str | None:
    """The model a path names: `v1beta/models/gemini-2.5-flash:generateContent` ->
    `gemini-2.5-flash`."""
    found = _PATH_MODEL.search(endpoint)
    return found[1] if found else None
