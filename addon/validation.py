"""Request body rules: a model allowlist for bodies that name a `model`, and a `max_tokens` cap.

Body rules need the whole body, so they run in the `request` hook. So that no body slips past
them, `prepare` (in `requestheaders`) keeps such a request buffered and refuses what cannot be
buffered safely: a declared length over `max_body` (413) or no declared length at all (411).
Methods, routes and the endpoint allowlist are checked by routing before this.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from addon.config_node import Node
from addon.problems import Refusal

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
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


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    models: tuple[str, ...] | None = None  # globs: `claude-sonnet-4-*`
    max_tokens: int | None = None
    max_body: int = 32 << 20  # bytes buffered for the checks above

    @property
    def reads_body(self) -> bool:
        return self.models is not None or self.max_tokens is not None


def parse_validation(node: Node | None) -> ValidationSpec:
    if node is None:
        return ValidationSpec()
    raw_size = node.raw("max_body", 32 << 20)
    match = _SIZE.fullmatch(str(raw_size).strip())
    if isinstance(raw_size, bool) or not match:
        node.fail("must be a size like 32MiB, 512KiB or a number of bytes", "max_body")
    spec = ValidationSpec(
        models=node.texts("models", None),
        max_tokens=node.integer("max_tokens", None, minimum=1),
        max_body=int(match[1]) * _UNITS[match[2].lower()],
    )
    node.finish()
    return spec


def prepare(
    spec: ValidationSpec,
    method: str,
    header: Callable[[str], str | None],
    buffer_limit: int | None = None,
) -> Refusal | None:
    """Whether the body can be checked whole; the caller then keeps the request buffered.

    `buffer_limit`: mitmproxy's own streaming threshold, if any (bodies past it get streamed)."""
    if not spec.reads_body:
        return None
    limit = min(spec.max_body, buffer_limit) if buffer_limit else spec.max_body
    encoding = header("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return Refusal(
            415, "encoded-body", "this endpoint's body is checked: send it without content-encoding"
        )
    length = header("content-length")
    if length is None:
        if method in BODY_METHODS or header("transfer-encoding") is not None:
            return Refusal(
                411, "length-required", "this endpoint's body is checked: send a Content-Length"
            )
        return None
    if not length.strip().isdigit() or int(length) > limit:
        return Refusal(
            413, "body-too-large", f"the body is checked and may be at most {limit} bytes"
        )
    return None


def check_body(spec: ValidationSpec, content_type: str, body: bytes) -> Refusal | None:
    if not spec.reads_body or not body:
        return None
    if len(body) > spec.max_body:
        return Refusal(
            413, "body-too-large", f"the body is checked and may be at most {spec.max_body} bytes"
        )
    fields = _fields(content_type.split(";")[0].strip().lower(), content_type, body)
    if isinstance(fields, Refusal):
        return fields
    if spec.models is not None and "model" in fields:
        model = fields["model"]
        if not isinstance(model, str) or not any(
            fnmatch.fnmatchcase(model, glob) for glob in spec.models
        ):
            return Refusal(403, "model-not-allowed", "rule models: this model is not allowed")
    if spec.max_tokens is not None:
        for name in TOKEN_FIELDS:
            if name not in fields:
                continue
            value = fields[name]
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value > spec.max_tokens:
                return Refusal(
                    403,
                    "max-tokens-exceeded",
                    f"rule max_tokens: {name} may be at most {spec.max_tokens}",
                )
    return None


def _fields(kind: str, content_type: str, body: bytes) -> dict[str, Any] | Refusal:
    """The top-level fields of a JSON, form or multipart body."""
    if kind == "application/json" or kind.endswith("+json"):
        try:
            value = json.loads(body, object_pairs_hook=_no_checked_duplicates)
        except _Duplicate:
            return _DUPLICATE
        except (ValueError, UnicodeDecodeError):
            return Refusal(400, "invalid-json", "the JSON body cannot be parsed")
        return value if isinstance(value, dict) else {}
    pairs: list[tuple[str, str]] = []
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    elif kind == "multipart/form-data":
        from mitmproxy.net.http.multipart import decode_multipart

        pairs = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in decode_multipart(content_type, body)
        ]
    try:
        return _no_checked_duplicates(pairs)
    except _Duplicate:
        return _DUPLICATE


class _Duplicate(ValueError):
    pass


# Servers disagree on which of two `model` fields counts: refuse the ambiguity.
_DUPLICATE = Refusal(400, "duplicate-field", "a checked field appears twice in the body")
_CHECKED = frozenset({"model", *TOKEN_FIELDS})


def _no_checked_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out and name in _CHECKED:
            raise _Duplicate(name)
        out.setdefault(name, value)
    return out
