"""Request body rules: a model allowlist for bodies that name a `model`, a `max_tokens` cap and a
`max_n` cap on how many results one request buys.

Body rules need the whole body, so they run in the `request` hook. So that no body slips past
them, `prepare` (in `requestheaders`) keeps such a request buffered and refuses what cannot be
buffered safely: a declared length over `max_body` (413) or no declared length at all (411).
A body is checked only in a form whose fields keyrelay reads exactly as the provider does:
JSON, a urlencoded form or multipart/form-data (multipart.py). Any other body is refused
(415), as is a Content-Type given twice (400): the provider may read the body as JSON anyway.
Methods, routes and the endpoint allowlist are checked by routing before this.

Batches carry many requests in one: Anthropic's message batches (`requests[].params`) are
checked request by request; an OpenAI batch (`input_file_id`: its requests are in a file
uploaded earlier, which keyrelay never reads) is refused wherever body rules apply. A `model`
named in the query (OpenAI's realtime WebSocket) or in the path (Gemini's) is checked too,
before any body, and a WebSocket must name one when `models:` is set: its messages are never
checked.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from addon.config.validation import ValidationSpec
from addon.guard import multipart
from addon.metering import gemini
from addon.problems import Refusal

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MODEL_FIELDS = ("model", "model_id")  # model_id: ElevenLabs
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
COUNT_FIELDS = ("n", "best_of", "num_images")  # results per request: OpenAI's n, fal's num_images


def prepare(
    max_body: int,
    method: str,
    header_values: Callable[[str], list[str]],
    buffer_limit: int | None = None,
) -> Refusal | None:
    """Whether a body that body rules apply to can be checked whole; the caller then keeps the
    request buffered. `header_values` lists a header's values (mitmproxy's `get_all`).

    `buffer_limit`: mitmproxy's own streaming threshold, if any (bodies past it get streamed)."""

    def header(name: str) -> str | None:
        values = header_values(name)
        return ", ".join(values) if values else None

    if len(header_values("content-type")) > 1:
        return Refusal(400, "duplicate-content-type", "the Content-Type header is given twice")
    limit = min(max_body, buffer_limit) if buffer_limit else max_body
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


def check_body(spec: ValidationSpec, content_types: Sequence[str], body: bytes) -> Refusal | None:
    """The body rules on a whole body; `content_types`: every Content-Type header sent."""
    if not spec.reads_body or not body:
        return None
    if len(body) > spec.max_body:
        return Refusal(
            413, "body-too-large", f"the body is checked and may be at most {spec.max_body} bytes"
        )
    fields = body_fields(f"rule {spec.rule_names}", content_types, body, _CHECKED)
    if isinstance(fields, Refusal):
        return fields
    if "input_file_id" in fields:
        return Refusal(
            403,
            "batch-not-checked",
            f"rule {spec.rule_names}: a batch whose requests are in an uploaded file "
            "cannot be checked",
        )
    requests = fields.get("requests")
    if requests is None:
        return _check_request(spec, fields)
    if not isinstance(requests, list) or not all(
        isinstance(item, dict) and isinstance(item.get("params"), dict) for item in requests
    ):
        return Refusal(
            400, "batch-unreadable", "each entry of requests must be an object with params"
        )
    if refusal := check_model(spec, fields):
        return refusal
    for item in requests:
        if refusal := _check_request(spec, item["params"]):
            return refusal
    return None


def check_path(spec: ValidationSpec, path: str) -> Refusal | None:
    """`models:` on a model named in the path (Gemini's `models/{model}:generateContent`):
    its body names none, so the path is what the allowlist holds to."""
    model = gemini.path_model(path)
    if spec.models is None or model is None:
        return None
    return check_model(spec, {"model": model})


def check_query(spec: ValidationSpec, query: str, *, websocket: bool) -> Refusal | None:
    """`models:` on a model named in the query string (`?model=`, `?model_id=`). A WebSocket's
    messages are never checked: under `max_tokens:` (every request must name its cap) it is
    refused, under `models:` its URL must name the model."""
    if websocket and spec.max_tokens is not None:
        return Refusal(
            403,
            "max-tokens-required",
            "rule max_tokens: a WebSocket's messages are not checked, so none may open here",
        )
    if spec.models is None:
        return None
    named = [v for k, v in parse_qsl(query, keep_blank_values=True) if k in MODEL_FIELDS]
    if len(named) > 1:
        return Refusal(400, "duplicate-field", "the query names a model twice")
    if named:
        return check_model(spec, {"model": named[0]})
    if websocket:
        return Refusal(
            403,
            "model-required",
            "rule models: a WebSocket's messages are not checked, so its URL must name "
            "the model (?model=)",
        )
    return None


def check_model(spec: ValidationSpec, fields: dict[str, Any]) -> Refusal | None:
    if spec.models is None:
        return None
    for name in MODEL_FIELDS:
        if name in fields:
            model = fields[name]
            if not isinstance(model, str) or not any(
                fnmatch.fnmatchcase(model, glob) for glob in spec.models
            ):
                return Refusal(403, "model-not-allowed", "rule models: this model is not allowed")
    return None


def _check_request(spec: ValidationSpec, fields: dict[str, Any]) -> Refusal | None:
    """The rules on one request's fields (a body's, or one entry of a batch's)."""
    if refusal := check_model(spec, fields):
        return refusal
    if spec.max_tokens is not None:
        named = [name for name in TOKEN_FIELDS if name in fields]
        if not named:
            return Refusal(
                403,
                "max-tokens-required",
                f"rule max_tokens: the body must set one of {', '.join(TOKEN_FIELDS)}",
            )
        for name in named:
            if not _at_most(fields[name], spec.max_tokens):
                return Refusal(
                    403,
                    "max-tokens-exceeded",
                    f"rule max_tokens: {name} may be at most {spec.max_tokens}",
                )
    if spec.max_n is not None:
        for name in COUNT_FIELDS:
            if name in fields and not _at_most(fields[name], spec.max_n):
                return Refusal(
                    403, "max-n-exceeded", f"rule max_n: {name} may be at most {spec.max_n}"
                )
    return None


def _at_most(value: Any, cap: int) -> bool:
    """A whole number (form fields: its digits) from 0 to `cap`."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= cap


def body_fields(
    rule: str, content_types: Sequence[str], body: bytes, checked: frozenset[str]
) -> dict[str, Any] | Refusal:
    """The top-level fields of a JSON, urlencoded or multipart body; a refusal for any other
    body, or when a `checked` field is given twice. `rule` names the rule for a 415's detail."""
    content_type = content_types[0] if len(content_types) == 1 else ""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            value = json.loads(body, object_pairs_hook=lambda p: _no_duplicates(p, checked))
        except _Duplicate:
            return _DUPLICATE
        except (ValueError, UnicodeDecodeError, RecursionError):
            return Refusal(400, "invalid-json", "the JSON body cannot be parsed")
        return value if isinstance(value, dict) else {}
    pairs: list[tuple[str, str]]
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    elif kind == "multipart/form-data":
        parts = multipart.form_fields(content_type, body)
        if isinstance(parts, Refusal):
            return parts
        pairs = [(name, value.decode("latin-1")) for name, value in parts]
    else:
        return Refusal(
            415,
            "unchecked-body",
            f"{rule}: this endpoint's body is checked, so it must be JSON, "
            "application/x-www-form-urlencoded or multipart/form-data",
        )
    try:
        return _no_duplicates(pairs, checked)
    except _Duplicate:
        return _DUPLICATE


class _Duplicate(ValueError):
    pass


# Servers disagree on which of two `model` fields counts: refuse the ambiguity.
_DUPLICATE = Refusal(400, "duplicate-field", "a checked field appears twice in the body")
_CHECKED = frozenset({*MODEL_FIELDS, *TOKEN_FIELDS, *COUNT_FIELDS, "requests", "input_file_id"})


def _no_duplicates(pairs: list[tuple[str, Any]], checked: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out and name in checked:
            raise _Duplicate(name)
        out.setdefault(name, value)
    return out
