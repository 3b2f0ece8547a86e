"""A WebRTC call's offer as keyrelay reads it (addon/guard/call_offer.py): the forms the `openai`
SDK sends (the SDP alone; multipart with sdp and session parts), the model it names, the rules
held to it, and the call id its answer's Location gives."""

from __future__ import annotations

import json

import pytest

from addon.config.validation import ValidationSpec
from addon.guard import call_offer
from addon.problems import Refusal

pytestmark = pytest.mark.unit

SDP = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
BOUNDARY = "----b0undary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
RULES = ValidationSpec(models=("gpt-realtime*",))


def form(*parts: tuple[str, str, bytes]) -> bytes:
    """A multipart body as the SDK's encode_multipart makes one: (name, type, value) parts."""
    body = b""
    for name, kind, value in parts:
        body += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + value
            + b"\r\n"
        )
    return body + f"--{BOUNDARY}--\r\n".encode()


def session(**config: object) -> tuple[str, str, bytes]:
    return ("session", "application/json", json.dumps(config).encode())


def test_the_offer_alone_carries_no_session() -> None:
    assert call_offer.offer_of(["application/sdp"], SDP, "") == (None, None)
    assert call_offer.offer_of(["application/sdp"], SDP, "model=gpt-realtime") == (
        None,
        "gpt-realtime",
    )


def test_a_form_names_its_model_in_the_session_part() -> None:
    body = form(("sdp", "application/sdp", SDP), session(type="realtime", model="gpt-realtime"))
    assert call_offer.offer_of([FORM], body, "") == (
        {"type": "realtime", "model": "gpt-realtime"},
        "gpt-realtime",
    )
    assert call_offer.offer_of([FORM], form(("sdp", "application/sdp", SDP)), "") == (None, None)


@pytest.mark.parametrize(
    ("types", "body", "query"),
    [
        (["text/plain"], SDP, ""),  # neither form
        (["application/sdp", "application/sdp"], SDP, ""),  # two Content-Types
        ([FORM], form(session(model="gpt-realtime")), ""),  # no sdp part
        ([FORM], form(("sdp", "application/sdp", SDP), ("sdp", "application/sdp", SDP)), ""),
        ([FORM], form(("sdp", "application/sdp", SDP), session(), session()), ""),
        ([FORM], form(("sdp", "application/sdp", SDP), ("session", "application/json", b"[]")), ""),
        ([FORM], form(("sdp", "application/sdp", SDP), ("session", "application/json", b"{")), ""),
        ([FORM], form(("sdp", "application/sdp", SDP), session(model=7)), ""),
        # Two models that differ: which one OpenAI runs is not keyrelay's guess.
        ([FORM], form(("sdp", "application/sdp", SDP), session(model="gpt-realtime")), "model=o"),
        (["application/sdp"], SDP, "model=gpt-realtime&model=gpt-realtime-mini"),
        ([FORM], b"not a form", ""),
    ],
)
def test_an_offer_keyrelay_cannot_read_one_way_is_refused(
    types: list[str], body: bytes, query: str
) -> None:
    refused = call_offer.offer_of(types, body, query)
    assert isinstance(refused, Refusal) and refused.status == 400


def test_the_rules_hold_the_model_an_offer_names() -> None:
    allowed = form(("sdp", "application/sdp", SDP), session(model="gpt-realtime-mini"))
    assert call_offer.check(RULES, [FORM], allowed, "") is None
    forbidden = form(("sdp", "application/sdp", SDP), session(model="gpt-4o-realtime-preview"))
    refused = call_offer.check(RULES, [FORM], forbidden, "")
    assert isinstance(refused, Refusal) and refused.reason == "model-not-allowed"
    refused = call_offer.check(RULES, ["application/sdp"], SDP, "model=gpt-4o-realtime-preview")
    assert isinstance(refused, Refusal) and refused.reason == "model-not-allowed"
    # Under `models:` an offer must say its model: OpenAI's default would go unchecked.
    refused = call_offer.check(RULES, ["application/sdp"], SDP, "")
    assert isinstance(refused, Refusal) and refused.reason == "model-required"
    # Without `models:` any readable offer goes on.
    assert call_offer.check(ValidationSpec(), ["application/sdp"], SDP, "") is None


@pytest.mark.parametrize(
    ("location", "call_id"),
    [
        (
            "/v1/realtime/calls/rtc_u1_9c6574da8b8a41a18da9308f4ad974ce",
            "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce",
        ),
        ("https://api.openai.com/v1/realtime/calls/rtc_abc/", "rtc_abc"),
        ("/v1/realtime/calls/rtc_abc?x=1", "rtc_abc"),
        (None, None),
        ("", None),
        ("/v1/realtime/calls/rtc_a%2Fb", None),  # only what an id can be goes into a URL
        ("/v1/realtime/calls/rtc a", None),
    ],
)
def test_the_call_id_is_the_last_segment_of_the_answer_location(
    location: str | None, call_id: str | None
) -> None:
    assert call_offer.call_id(location) == call_id
