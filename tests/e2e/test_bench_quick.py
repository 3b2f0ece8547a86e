"""scripts/bench --quick runs end to end and prints the whole table (never judges timings)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from support.repo import REPO

sys.path.insert(0, str(REPO))  # bench/ is a directory of the repo, not an installed package
ROWS = importlib.import_module("bench.table").ROWS
TARGETS = (
    "direct",
    "mitmdump",
    "mitm+tbl",
    "mitm-st",
    "keyrelay",
    "kr+all",
    "nginx",
    "fal",
    "2kr+lb",
)


def test_quick_bench_prints_every_row_and_column() -> None:
    done = subprocess.run(
        [str(REPO / "scripts/bench"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert ": not measured:" not in out, out  # every column could start
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["direct", "mitmdump"])
    assert header.split()[: len(TARGETS)] == list(TARGETS)
    for row in ROWS:
        label = row.label + (" +" if row.added else "")
        line = next((ln for ln in lines if ln.startswith(label + " ")), None)
        assert line is not None, f"row {label!r} missing:\n{out}"
        cells = line[len(label) :].split()
        assert len(cells) == len(header.split()), line
