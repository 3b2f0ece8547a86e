"""A minimal `.env` reader: KEY=VALUE lines, optional `export`, quotes, comments."""

from __future__ import annotations

from pathlib import Path


def load(path: Path) -> dict[str, str]:
    """The file's variables, or nothing when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return parse(text)


def parse(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name.isidentifier():
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values
