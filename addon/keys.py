"""The keys keyrelay injects, resolved once per rules load (never per request)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from addon.rules import Provider, Rules

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Key:
    value: str
    placeholder: str  # what stored and shown flows carry instead, e.g. "<FAL_KEY>"


class KeyStore:
    def __init__(self, rules: Rules) -> None:
        self._keys: dict[str, Key | None] = {}
        for provider in rules.providers:
            value = provider.credential.resolve(rules.env)
            if value is not None and any(c < " " or c == "\x7f" for c in value):
                logger.error(
                    "keyrelay: %s: the key contains control characters; ignored", provider.name
                )
                value = None
            self._keys[provider.name] = (
                Key(value, f"<{provider.credential.sources[0].names[0]}>") if value else None
            )

    def key_for(self, provider: Provider) -> Key | None:
        return self._keys.get(provider.name)

    def secrets(self) -> dict[str, str]:
        """Every key value and its placeholder, for redaction."""
        return {k.value: k.placeholder for k in self._keys.values() if k}

    def log_status(self, rules: Rules) -> None:
        for provider in rules.providers:
            if self._keys[provider.name]:
                logger.info("keyrelay: %s is configured", provider.name)
            else:
                logger.warning(
                    "keyrelay: %s has no key: set %s",
                    provider.name,
                    provider.credential.describe_missing(),
                )
