"""Running the Node drivers in tests/clients/ (fal.mjs, inference.mjs, browser.mjs)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

CLIENTS = Path(__file__).resolve().parent


def run_driver(
    node: str, script: str, args: list[str], env: Mapping[str, str], timeout: float = 60
) -> dict[str, Any]:
    """Run a tests/clients/*.mjs driver; returns its one JSON line (exit status under 'exit')."""
    child = {k: v for k, v in os.environ.items() if not k.upper().endswith(("_KEY", "_SECRET"))}
    child.update(env)
    proc = subprocess.run(
        [node, str(CLIENTS / script), *args],
        cwd=CLIENTS,
        env=child,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{script} printed nothing (exit {proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = proc.returncode
    result["stderr"] = proc.stderr
    return result
