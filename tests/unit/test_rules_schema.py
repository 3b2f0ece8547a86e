"""docs/rules.schema.json: generated from the sections that read rules.yaml, so that an editor
checks a file as keyrelay will. The shipped rules.yaml and every rules example in docs/ pass it,
and keyrelay's own reading of them agrees."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from addon.config import schema
from addon.config.model import ConfigError
from addon.config.provider import ProviderEntry
from addon.config.rules import RulesDocument, load, parse

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "rules.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(schema.schema())
TOP_KEYS = set(RulesDocument.__dataclass_fields__)
ENTRY_KEYS = set(ProviderEntry.__dataclass_fields__)
A_PROVIDER = {"openai": {}}  # what a fragment of top-level sections is checked beside


def test_the_published_schema_is_the_generated_one() -> None:
    assert json.loads(PUBLISHED.read_text()) == schema.schema(), (
        "regenerate: .venv/bin/python -m addon.config.schema > docs/rules.schema.json"
    )
    assert PUBLISHED.read_text() == schema.render()


def test_the_shipped_rules_pass_the_schema_and_keyrelay() -> None:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text())
    VALIDATOR.validate(data)
    assert load(ROOT / "rules.yaml", {}).providers


REFERENCE = "# rules.yaml reference"  # every key once: checked by the schema, not read whole


def _examples() -> list[tuple[str, str]]:
    """Every ```yaml block of docs/, but those that say (in a first-line comment) they are
    another file: a Kubernetes excerpt, a tenants file."""
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", page.read_text(), re.S)):
            first = block.lstrip().splitlines()[0]
            if first.startswith("#") and "rules.yaml" not in first:
                continue
            found.append((f"{page.name}#{i}", block))
    return found


def _as_document(example: Any) -> dict[str, Any]:
    """An example as a whole rules file: whole already, top-level sections, a provider's
    sections, or entries of `providers:`."""
    assert isinstance(example, dict) and example
    if set(example) <= TOP_KEYS:
        return example if "providers" in example else {**example, "providers": A_PROVIDER}
    if set(example) <= ENTRY_KEYS:
        return {"providers": {"openai": example}}
    return {"providers": example}


EXAMPLES = _examples()


def test_the_docs_have_rules_examples() -> None:
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize(("where", "block"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_each_rules_example_in_the_docs_passes_the_schema_and_keyrelay(
    where: str, block: str, tmp_path: Path
) -> None:
    document = _as_document(yaml.safe_load(block))
    VALIDATOR.validate(document)
    if not block.startswith(REFERENCE):
        parse(document, tmp_path / "rules.yaml", {})  # and keyrelay reads it, meaning and all


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"providers": {"openai": {"limits": {"rate": "60/minute", "burst": 3}}}}, "burst"),
        ({"providers": {"openai": {"validation": {"max_tokens": "4096"}}}}, "max_tokens"),
        ({"providers": {"openai": {"auth": {"mode": "magic"}}}}, "mode"),
        ({"admin": {"loopback": "yes"}, "providers": A_PROVIDER}, "loopback"),
        ({"providers": {"openai": {"transport": {"max_request_bytes": "lots"}}}}, "max_request"),
        ({"budget": {"daily": -1}, "providers": A_PROVIDER}, "daily"),
        ({"providers": A_PROVIDER, "proxy": {}}, "proxy"),
    ],
)
def test_what_keyrelay_refuses_the_schema_refuses_too(change: dict[str, Any], key: str) -> None:
    """The schema is as strict as the reader: an unknown key, a quoted number, a `yes`."""
    with pytest.raises(ConfigError) as refused:
        parse(change, Path("rules.yaml"), {})
    assert key in refused.value.key
    assert not VALIDATOR.is_valid(change)
