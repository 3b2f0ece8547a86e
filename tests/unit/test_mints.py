"""A credential minted for a browser (addon/guard/mints.py): its model held to `models:`, its
lifetime lowered to the cap, never raised, and what it is charged (metering/prices.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from addon.config.budget import Price
from addon.config.model import ConfigError, read
from addon.config.operations import MintSpec, OperationEntry
from addon.config.validation import ValidationSpec
from addon.guard import mints
from addon.metering import prices
from addon.problems import Refusal

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OPENAI = MintSpec(
    lifetime=600, model=("session.model",), expires="expires_after.seconds", session=3600
)
GOOGLE = MintSpec(lifetime=1800, model=("setup.model",), expires_at="expireTime")
FIXED = MintSpec(lifetime=900)
RULES = ValidationSpec(models=("gpt-realtime*", "gemini-live-*"))


def test_a_lifetime_past_the_cap_is_lowered_and_the_request_left_as_sent() -> None:
    asked = {
        "expires_after": {"anchor": "created_at", "seconds": 7200},
        "session": {"model": "gpt-realtime"},
    }
    sent = mints.check(OPENAI, RULES, asked, NOW)
    assert sent == {
        "expires_after": {"anchor": "created_at", "seconds": 300},
        "session": asked["session"],
    }
    assert asked["expires_after"]["seconds"] == 7200  # the client's body is not changed in place
    short = {"expires_after": {"seconds": 60}, "session": {"model": "gpt-realtime"}}
    assert mints.check(OPENAI, RULES, short, NOW) is short  # never raised


def test_a_request_that_names_no_lifetime_gets_the_cap_when_the_providers_default_is_longer() -> (
    None
):
    sent = mints.check(OPENAI, RULES, {"session": {"model": "gpt-realtime"}}, NOW)
    assert isinstance(sent, dict) and sent["expires_after"] == {"seconds": 300}
    allowing = ValidationSpec(max_credential_seconds=900)
    assert mints.check(OPENAI, allowing, {}, NOW) == {}  # 600 s by default: within 900


def test_an_expiry_time_is_lowered_to_the_cap_from_now() -> None:
    body = {"expireTime": "2026-12-07T14:00:00Z", "setup": {"model": "models/gemini-live-2.5"}}
    sent = mints.check(GOOGLE, RULES, body, NOW)
    assert isinstance(sent, dict) and sent["expireTime"] == "2026-12-07T12:05:00Z"
    assert mints.lifetime(GOOGLE, sent, NOW) == 300


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"session": {"model": "gpt-4o-realtime-preview"}}, "model-not-allowed"),
        ({"session": {}}, "credential-not-allowed"),  # names no model under `models:`
        (
            {"session": {"model": "gpt-realtime"}, "expires_after": {"seconds": "60"}},
            "credential-not-allowed",
        ),
        (
            {"session": {"model": "gpt-realtime"}, "expires_after": {"seconds": -5}},
            "credential-not-allowed",
        ),
        (
            {"session": {"model": "gpt-realtime"}, "expires_after": {"seconds": True}},
            "credential-not-allowed",
        ),
        (["not", "an", "object"], "credential-not-allowed"),
    ],
)
def test_what_cannot_be_held_to_the_rules_is_refused(body: object, reason: str) -> None:
    refused = mints.check(OPENAI, RULES, body, NOW)
    assert isinstance(refused, Refusal) and refused.reason == reason


@pytest.mark.parametrize("expiry", ["2026-12-07T11:00:00Z", "tomorrow", "2026-12-07T14:00:00", 5])
def test_an_expiry_in_the_past_or_not_a_time_is_refused(expiry: object) -> None:
    body = {"expireTime": expiry, "setup": {"model": "gemini-live-2.5"}}
    refused = mints.check(GOOGLE, RULES, body, NOW)
    assert isinstance(refused, Refusal) and "expireTime" in refused.detail


def test_a_fixed_lifetime_past_the_cap_is_refused_not_shortened() -> None:
    refused = mints.check(FIXED, ValidationSpec(), {}, NOW)
    assert isinstance(refused, Refusal) and "900 s" in refused.detail
    assert mints.check(FIXED, ValidationSpec(max_credential_seconds=900), {}, NOW) == {}


def test_a_mint_is_charged_its_lifetime_and_one_session_by_the_minute() -> None:
    price = Price(model="gpt-realtime*", minute=0.06)
    body = {"expires_after": {"seconds": 300}, "session": {"model": "gpt-realtime"}}
    seconds = mints.usable_seconds(OPENAI, body, NOW)
    assert seconds == 300 + 3600
    facts = prices.RequestFacts(model="gpt-realtime", key_seconds=seconds)
    assert prices.worst_case(price, facts, None, "POST") == round(65 * 0.06 * prices.NANO)
    # A price that also has token rates prices a minted key by the minute all the same.
    both = Price(model="*", input=5.0, output=20.0, minute=0.06)
    assert prices.worst_case(both, facts, None, "POST") == round(65 * 0.06 * prices.NANO)


def test_a_mint_spec_is_checked_where_it_is_written() -> None:
    entry = {"op": "POST api.x.test/v1/keys", "kind": "mint-credential", "mint": {"lifetime": 60}}
    assert read(OperationEntry, entry, "p.yaml").mint == MintSpec(lifetime=60)
    for change, key in [
        ({"kind": "generate"}, "ops.k.mint"),  # a mint spec on a call that mints nothing
        ({"mint": {"lifetime": 0}}, "ops.k.mint.lifetime"),
        ({"mint": {"lifetime": 60, "expires": "a", "expires_at": "b"}}, "ops.k.mint.expires_at"),
        ({"mint": None, "meter": "minutes"}, "ops.k.meter"),
    ]:
        with pytest.raises(ConfigError) as refused:
            read(OperationEntry, {**entry, **change}, "p.yaml", "ops.k")
        assert refused.value.key == key
