"""A WebRTC call's offer and answer (OpenAI's `POST /v1/realtime/calls`). Pure.

As the `openai` SDK sends the offer (resources/realtime/calls.py, `calls.create`): the SDP offer
alone as the body (`application/sdp`) when no session config is given, else
multipart/form-data with an `sdp` part (`application/sdp`) and a `session` part (JSON, the
SDK's `RealtimeSessionCreateRequestParam`: the model in `session.model`).
`@openai/agents-realtime` posts the offer alone (`application/sdp`) and sends its config over
the data channel, where keyrelay does not see it: the model is then the URL's `?model=`.

The answer is the SDP answer; its `Location` header names the call
(`/v1/realtime/calls/rtc_...`: the agents SDK takes its last segment as the call id).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from addon.config.validation import ValidationSpec
from addon.guard import body_rules, multipart
from addon.problems import Refusal

SDP = "application/sdp"
FORM = "multipart/form-data"
# A call id goes into the sideband's URL and the hangup's path: only what an id can be.
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


Offer = tuple[dict[str, Any] | None, str | None]  # the session config, the model


def check(
    rules: ValidationSpec, content_types: list[str], body: bytes, query: str
) -> Refusal | None:
    """The guard's check of an offer: readable, and its model one `models:` allows."""
    read = offer_of(content_types, body, query)
    if isinstance(read, Refusal):
        return read
    model = read[1]
    if rules.models is None:
        return None
    if model is None:
        return Refusal(
            403,
            "model-required",
            "rule models: a call's offer must name its model (the session part's model, or "
            "?model=)",
        )
    return body_rules.check_model(rules, {"model": model})


def offer_of(content_types: list[str], body: bytes, query: str) -> Offer | Refusal:
    """The session config an offer carries and the model it names (either may be None)."""
    if len(content_types) != 1:
        return _invalid("a call's offer has one Content-Type")
    session = session_of(content_types[0], body)
    if isinstance(session, Refusal):
        return session
    model = model_of(session, query)
    if isinstance(model, Refusal):
        return model
    return session, model


def session_of(content_type: str, body: bytes) -> dict[str, Any] | Refusal | None:
    """The session config the offer carries; None: the offer alone."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == SDP:
        return None
    if kind != FORM:
        return _invalid(f"a call's offer is {SDP}, or {FORM} with sdp and session parts")
    fields = multipart.form_fields(content_type, body)
    if isinstance(fields, Refusal):
        return fields
    names = [name for name, _ in fields]
    if names.count("sdp") != 1 or names.count("session") > 1:
        return _invalid("a call's form has one sdp part and at most one session part")
    given = [value for name, value in fields if name == "session"]
    if not given:
        return None
    try:
        session = json.loads(given[0])
    except (ValueError, UnicodeDecodeError):
        session = None
    if not isinstance(session, dict):
        return _invalid("a call's session part must be a JSON object")
    return session


def model_of(session: dict[str, Any] | None, query: str) -> str | Refusal | None:
    """The model the call is for: the session config's, or the URL's `?model=`; two that
    differ are refused (which one OpenAI runs is not keyrelay's guess)."""
    named = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "model"]
    if len(named) > 1:
        return _invalid("the URL names ?model= more than once")
    in_url = named[0] if named else None
    in_session = session.get("model") if session is not None else None
    if in_session is not None and not isinstance(in_session, str):
        return _invalid("session.model must be a string")
    if in_session is not None and in_url is not None and in_session != in_url:
        return _invalid("the URL's ?model= and session.model differ")
    return in_session if in_session is not None else in_url


def call_id(location: str | None) -> str | None:
    """The call an answer names in its `Location` (its last path segment), or None."""
    if not location:
        return None
    last = location.partition("?")[0].rstrip("/").rpartition("/")[2]
    return last if _CALL_ID.fullmatch(last) else None


def _invalid(detail: str) -> Refusal:
    return Refusal(400, "invalid-offer", detail)
