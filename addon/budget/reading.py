"""A request's cost, read as the provider reads its body: a JSON body's fields, or a form's
(OpenAI's image edits, transcriptions and videos), whose counts arrive as text."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from mitmproxy import http

from addon.config.operations import Operation
from addon.guard import mints, multipart
from addon.metering import prices
from addon.problems import Refusal

# A form's fields that set its cost (its files only bound it by their size).
_FORM_FIELDS = frozenset(("model", "n", "seconds", *prices.TOKEN_FIELDS))


def read(
    request: http.Request, body: bytes, operation: Operation | None
) -> tuple[prices.RequestFacts, dict[str, Any] | None, bool] | Refusal:
    """What the body says about its cost: a JSON body's fields, or a form's (OpenAI's image
    edits, transcriptions, videos), whose counts arrive as text; and whether it was a form."""
    content_type = request.headers.get("content-type", "")
    form = content_type.lower().startswith("multipart/form-data")
    data: dict[str, Any] | None = {}
    if form:
        fields = multipart.form_fields(content_type, body)
        if isinstance(fields, Refusal):
            return fields
        read: dict[str, Any] = {}
        for name, value in fields:
            if name in _FORM_FIELDS:
                if name in read:  # which one would the provider read?
                    return Refusal(400, "invalid-count", f"the form gives {name} twice")
                read[name] = form_value(value)
        facts, data = prices.facts_of(read, len(body), form=True), read
    else:
        facts, data = prices.read_body(body)
    if operation is None:
        return facts, data, form
    if operation.mint is not None:  # the body as the guard let it go (its lifetime capped)
        named = data if isinstance(data, dict) else {}
        seconds = mints.usable_seconds(operation.mint, named, datetime.now(UTC))
        model = mints.model_of(operation.mint, named)
        facts = dataclasses.replace(facts, model=model, key_seconds=seconds)
    if facts.seconds is None and operation.reserve is not None:
        facts = dataclasses.replace(facts, seconds=operation.reserve)
    if facts.tools and operation.tools_prompt:  # billed as input, not in the body
        facts = dataclasses.replace(facts, input_bound=facts.input_bound + operation.tools_prompt)
    return facts, data, form


def form_value(value: bytes) -> Any:
    """A form's text as its JSON twin would hold it: digits are a whole number."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return None
    return int(text) if text.isascii() and text.isdigit() else text
