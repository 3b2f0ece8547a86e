"""A credential minted through keyrelay lives no longer, and reaches no further, than the rules.

A browser that holds a minted key (an OpenAI Realtime client secret, a Gemini Live token, an
ElevenLabs single-use token) talks to the provider directly: keyrelay sees nothing it does after.
So the mint itself is where the rules hold, from what its profile declares (`mint:`,
config/operations.py):
- the model (or agent) the key is for must be one `validation.models` allows;
- the key lives at most `validation.max_credential_seconds` (300 s by default): a request that
  asks for longer, or names no lifetime while the provider's default is longer, is sent with
  the cap; a provider whose keys live a fixed time past the cap is refused (it cannot be
  shortened).

What goes upstream is the body as checked (`check` returns it, rewritten where capped).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from addon import dotted
from addon.config.operations import MintSpec
from addon.config.validation import ValidationSpec
from addon.guard import body_rules
from addon.problems import Refusal


def check(
    spec: MintSpec, rules: ValidationSpec, data: Any, now: datetime
) -> dict[str, Any] | Refusal:
    """The body to send for this mint, or why it may not be made."""
    if not isinstance(data, dict):
        return _refused("the request for a credential must be a JSON object")
    model = model_of(spec, data)
    if rules.models is not None:
        if model is None:
            return _refused("the request must name the model its credential is for")
        if refusal := body_rules.check_model(rules, {"model": model}):
            return refusal
    cap = rules.max_credential_seconds
    asked = lifetime(spec, data, now)
    if asked is None:
        return _refused(f"{_field(spec)} must be a number of seconds (or a time) to come")
    if asked <= cap:
        return data
    if spec.expires is None and spec.expires_at is None:
        return _refused(
            f"this provider's credentials live {asked} s, more than "
            f"validation.max_credential_seconds ({cap} s), and cannot be shortened"
        )
    capped = dict(data)
    if spec.expires is not None:
        _put(capped, spec.expires, cap)
    else:
        assert spec.expires_at is not None
        _put(capped, spec.expires_at, _rfc3339(now + timedelta(seconds=cap)))
    return capped


def model_of(spec: MintSpec, data: dict[str, Any]) -> str | None:
    """The model the credential is for: the first of the declared paths the body has."""
    for path in spec.model:
        value = dotted.at(data, path)
        if isinstance(value, str):
            return value.removeprefix("models/")  # Google names models `models/gemini-...`
    return None


def lifetime(spec: MintSpec, data: dict[str, Any], now: datetime) -> int | None:
    """Seconds the credential will live: what the body asks for, else the provider's default.
    None: the body's lifetime is not one (a string, a negative number, a time past)."""
    if spec.expires is not None and (given := dotted.at(data, spec.expires)) is not None:
        if type(given) is not int or given <= 0:
            return None
        return given
    if spec.expires_at is not None and (given := dotted.at(data, spec.expires_at)) is not None:
        at = _time(given)
        if at is None or at <= now:
            return None
        return max(1, int((at - now).total_seconds() + 0.999))
    return spec.lifetime


def usable_seconds(spec: MintSpec, data: dict[str, Any], now: datetime) -> int:
    """How long the key can be spent with: its lifetime, and one session it starts at the last
    moment (the worst case a mint is charged for; keyrelay sees none of it)."""
    return (lifetime(spec, data, now) or spec.lifetime) + spec.session


def _field(spec: MintSpec) -> str:
    return spec.expires or spec.expires_at or "the lifetime"


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, copying each mapping on the way (the caller's body is left as sent)."""
    *parents, last = path.split(".")
    here = data
    for key in parents:
        child = here.get(key)
        here[key] = dict(child) if isinstance(child, dict) else {}
        here = here[key]
    here[last] = value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None  # a time without a zone is not one


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _refused(detail: str) -> Refusal:
    return Refusal(403, "credential-not-allowed", f"rule validation: {detail}")
