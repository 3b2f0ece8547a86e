"""docs/deploy.md runs as written up to the image build: its shell blocks before
`docker build`, in one shell, in a copy of a keyrelay checkout. And what it says to run after
the build names the paths the recipes use."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from recipes import DOCKERFILE, REPO, UNIT

DOC = REPO / "docs" / "deploy.md"
# What a checkout holds that the install and the docs' steps read.
CHECKOUT = ("pyproject.toml", "constraints.txt", "README.md", "addon", "deploy")


def shell_blocks(markdown: str) -> list[str]:
    """The ```sh blocks, in order, with their indentation (a block in a list item) removed."""
    found = re.findall(r"^( *)```sh\n(.*?)^\1```$", markdown, flags=re.S | re.M)
    return [re.sub(rf"(?m)^{indent}", "", body) for indent, body in found]


def before_the_build(blocks: list[str]) -> list[str]:
    build = next(i for i, b in enumerate(blocks) if "docker build" in b)
    assert build >= 3, "the page should get to the build through its steps"
    return blocks[:build]


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The steps run in a fresh copy of the checkout: (that directory, what they printed)."""
    checkout = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(source, checkout / name, ignore=ignore)
        else:
            shutil.copy2(source, checkout / name)
    # `python3` is a Python 3.12 or newer, as the page asks: this one's base interpreter.
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python3").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)))
    home = checkout / "home-is-a-file"  # nothing may go to ~/.mitmproxy
    home.touch()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},  # the pip index
    }
    script = "\n".join(before_the_build(shell_blocks(DOC.read_text())))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return checkout, done.stdout


def test_the_steps_before_the_build_run_and_check_the_configuration(
    walked: tuple[Path, str],
) -> None:
    checkout, printed = walked
    assert printed.rstrip().endswith("configuration ok")
    assert "token (give it to the client" in printed  # the tokens step printed one
    assert (checkout / "venv" / "bin" / "keyrelay").is_file()
    assert (checkout / "config" / "rules.yaml").read_text() == (
        REPO / "deploy" / "rules.yaml"
    ).read_text()
    assert (checkout / "keys.env").stat().st_mode & 0o777 == 0o600
    assert (checkout / "state" / "mitmproxy" / "mitmproxy-ca.pem").is_file()  # the confdir


def test_a_broken_rules_file_fails_the_check(walked: tuple[Path, str]) -> None:
    """The check step can fail: the same command with rules naming no known profile."""
    checkout, _ = walked
    check = before_the_build(shell_blocks(DOC.read_text()))[-1]
    assert "--options" in check
    rules = checkout / "config" / "rules.yaml"
    kept = rules.read_text()
    rules.write_text("providers: {x: {profile: nope}}\n")
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", check],
            cwd=checkout,
            env={"PATH": "/usr/bin:/bin", "HOME": str(checkout / "home-is-a-file")},
            capture_output=True,
            text=True,
        )
    finally:
        rules.write_text(kept)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "configuration ok" not in done.stdout
    assert "providers.x.profile" in done.stderr  # `file: key: reason`


def test_the_steps_after_the_build_use_the_recipes_paths() -> None:
    after = "\n".join(shell_blocks(DOC.read_text()))
    rules = next(a for a in DOCKERFILE.entrypoint if a.startswith("keyrelay_rules="))
    rules_dir = str(Path(rules.split("=", 1)[1]).parent)
    assert f':{rules_dir}:ro"' in after  # the rules mounted where the image reads them
    (volume,) = DOCKERFILE.volumes
    assert f"keyrelay-state:{volume}" in after
    assert "docker build -f deploy/Dockerfile" in after
    (environment_file,) = UNIT["EnvironmentFile"]
    assert f"keys.env {environment_file}" in after  # the systemd host's keys where the unit reads
    prefix = UNIT["ExecStart"][0].split()[0].removesuffix("/bin/keyrelay")
    assert f"deploy/install.sh {prefix}" in after
