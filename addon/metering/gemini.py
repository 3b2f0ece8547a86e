"""What a Gemini request says about its cost: its body's `generationConfig`, its path's model.

Google's JSON reader takes a field in either spelling (`generationConfig.maxOutputTokens` or
`generation_config.max_output_tokens`), and reads 0 as unset (proto3): a cap of 0, or none,
lets the model make up to its own `outputTokenLimit`, thinking included. The model is named in
the path (`models/gemini-2.5-flash:generateContent`), not in the body.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)  # asked for each price looked up, per request
def path_model(endpoint: str) -> str | None:
    """The model a path names: `v1beta/models/gemini-2.5-flash:generateContent` ->
    `gemini-2.5-flash`."""
    found = _PATH_MODEL.search(endpoint)
    return found[1] if found else None


# Tools Google bills per grounded prompt, beyond tokens (either spelling).
_GROUNDING = frozenset(
    {
        "googleSearch",
        "google_search",
        "googleSearchRetrieval",
        "google_search_retrieval",
        "googleMaps",
        "google_maps",
        "enterpriseWebSearch",
        "enterprise_web_search",
    }
)


def unpriced(data: dict[str, Any]) -> str | None:
    """What a request bills that its body does not bound, or None: a cached context, a file by
    reference, inline audio, video or a document (their tokens grow with their length, not the
    1,600 an inline image is reserved), a tool grounded in Google Search or Maps."""
    if data.get("cachedContent") or data.get("cached_content"):
        return "cachedContent bills a stored context of unknown size as input"
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and (found := _GROUNDING.intersection(tool)):
            return f"the {min(found)!r} tool is billed per grounded prompt"
    contents = data.get("contents")
    for content in contents if isinstance(contents, list) else [contents]:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            if part.get("fileData") or part.get("file_data"):
                return "fileData bills a file of unknown size as input"
            inline = part.get("inlineData") or part.get("inline_data")
            kind = (
                inline.get("mimeType", inline.get("mime_type"))
                if isinstance(inline, dict)
                else None
            )
            if inline and not (isinstance(kind, str) and kind.lower().startswith("image/")):
                return "inline audio, video or documents bill more input than keyrelay can bound"
    return None
