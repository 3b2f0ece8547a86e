"""Where things are in the repository, for every test."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules.yaml"  # the rules.yaml users start from
TESTS = REPO / "tests"
