"""Reading keyrelay's JSON access log in end-to-end tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def log_lines(log: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The access log's lines for provider calls (not the start-up health checks), once there
    are `count` of them (log lines come from another process: they may trail the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        lines = [json.loads(x) for x in text.splitlines() if x.strip()]
        lines = [x for x in lines if x.get("provider")]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)
