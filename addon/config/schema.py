"""rules.yaml's JSON Schema, generated from the sections that read it (addon/config/model.py).

    .venv/bin/python -m addon.config.schema > docs/rules.schema.json

Editors that speak JSON Schema (VS Code's YAML extension, JetBrains) complete and check
rules.yaml with it: put `# yaml-language-server: $schema=docs/rules.schema.json` at the top.
tests/unit/test_rules_schema.py keeps the published file equal to what this renders, and checks
the shipped rules.yaml and the examples in docs/ against it.
"""

from __future__ import annotations

import json
from typing import Any

from addon.config.model import adapter
from addon.config.rules import RulesDocument

ID = "https://keyrelay.dev/schemas/rules.schema.json"


def schema() -> dict[str, Any]:
    generated = adapter(RulesDocument).json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": ID,
        "title": "keyrelay rules.yaml",
        **generated,
    }


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
