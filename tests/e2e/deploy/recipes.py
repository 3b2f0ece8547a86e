"""deploy/'s recipes as data, for the tests that run and check them: the Dockerfile's
instructions and the systemd unit's settings, read as Docker and systemd read them (the parts
these recipes use)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"


@dataclass
class Dockerfile:
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    stopsignal: str = ""


def read_dockerfile(path: Path) -> Dockerfile:
    """The instructions this recipe uses; continuation lines joined, comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    recipe = Dockerfile()
    for instruction in re.split(r"(?<!\\)\n", "\n".join(lines)):
        if not instruction.strip():
            continue
        word, _, rest = instruction.replace("\\\n", " ").strip().partition(" ")
        rest = rest.strip()
        match word.upper():
            case "COPY":
                *sources, dest = shlex.split(rest)
                recipe.copies.append((sources, dest))
            case "RUN":
                recipe.runs.append(rest)
            case "ENV":
                recipe.env.update(pair.split("=", 1) for pair in shlex.split(rest))  # type: ignore[misc]
            case "VOLUME":
                recipe.volumes += yaml.safe_load(rest)  # the JSON form
            case "ENTRYPOINT":
                recipe.entrypoint = yaml.safe_load(rest)
            case "CMD":
                recipe.cmd = yaml.safe_load(rest)
            case "USER":
                recipe.user = rest
            case "STOPSIGNAL":
                recipe.stopsignal = rest
    return recipe


def systemd_unit(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit, each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as `docker run --env-file` and systemd's EnvironmentFile read them."""
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln)
    return {k.strip(): v for k, v in pairs if not k.lstrip().startswith("#")}


DOCKERFILE = read_dockerfile(DEPLOY / "Dockerfile")
UNIT = systemd_unit(DEPLOY / "keyrelay.service")
