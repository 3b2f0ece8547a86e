"""Where an auth secret comes from: {env: NAME} (the environment or the .env beside the rules)
or {file: PATH} (relative to the rules file). Read once per rules load, never per request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from addon.config.node import Node

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretMissing(ValueError):
    """The secret's source is not set or cannot be read; the message names the source only."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    env: str | None = None
    file: Path | None = None

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


def parse_secret(parent: Node, name: str) -> SecretRef:
    node = parent.child(name)
    env, file = node.text("env", None), node.text("file", None)
    node.finish()
    if (env is None) == (file is None):
        node.fail("needs exactly one of env: NAME or file: PATH")
    if env is not None:
        if not _ENV_NAME.fullmatch(env):
            node.fail("must name an environment variable", "env")
        return SecretRef(env=env)
    return SecretRef(file=Path(node.file).resolve().parent / file)
