"""Where an auth secret comes from: {env: NAME} (the environment or the .env beside the rules)
or {file: PATH} (relative to the rules file). Read once per rules load, never per request."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from addon.config.key_sources import EnvName, RulesPath
from addon.config.model import fail, section


class SecretMissing(ValueError):
    """The secret's source is not set or cannot be read; the message names the source only."""


@section
class SecretRef:
    env: EnvName | None = None
    file: RulesPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and ("env" in raw) == ("file" in raw):
            fail("needs exactly one of env: NAME or file: PATH")
        return raw

    def read(self, environ: dict[str, str]) -> str:
        if self.env is not None:
            value = environ.get(self.env, "").strip()
            if not value:
                raise SecretMissing(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text()
        except OSError as e:
            raise SecretMissing(f"{self.file} cannot be read: {e.strerror}") from e

    def describe(self) -> str:
        return f"${self.env}" if self.env else str(self.file)
