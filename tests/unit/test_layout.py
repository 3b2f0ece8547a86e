"""The package layout: no top-level name in addon/ may hide another module.

mitmproxy puts the script's directory (addon/) on sys.path while it loads `addon/proxy.py`, so a
module or package there named like a standard library module or an installed package would be
imported in its place by anything that asks for that name."""

from __future__ import annotations

import sys
from importlib.metadata import packages_distributions

from support.repo import REPO


def test_no_top_level_name_in_addon_hides_another_module() -> None:
    addon = REPO / "addon"
    names = {p.stem for p in addon.glob("*.py")} | {
        p.name for p in addon.iterdir() if (p / "__init__.py").is_file()
    }
    assert {"relay", "config", "routing"} <= names  # the layout this test looks at
    taken = set(sys.stdlib_module_names) | set(packages_distributions())
    assert sorted(names & taken) == []
