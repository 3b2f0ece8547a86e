from pathlib import Path

import pytest
from support.repo import RULES

from addon.config.model import ConfigError
from addon.config.rules import load

REPO_RULES = RULES

MINIMAL = """
providers:
  anthropic:
    match: {prefix: /api/anthropic}
    upstream: https://api.anthropic.com
    credential: {header: x-api-key, key: {env: ANTHROPIC_API_KEY}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), {})
    return info.value


def test_the_shipped_rules_load() -> None:
    rules = load(REPO_RULES, {})
    names = [p.name for p in rules.providers]
    assert names == [
        *("anthropic", "openai", "elevenlabs", "fal", "inference", "gemini", "eachlabs"),
        "runware",
    ]


def test_a_new_provider_needs_no_code(tmp_path: Path) -> None:
    rules = load(
        write(
            tmp_path,
            MINIMAL
            + """
  replicate:
    match: {prefix: /api/replicate}
    upstream: https://api.replicate.com/v1
    allow: [POST api.replicate.com/v1/predictions]
    credential: {header: authorization, format: "Bearer {key}", key: {env: REPLICATE_API_TOKEN}}
""",
        ),
        {"REPLICATE_API_TOKEN": "r8"},
    )
    replicate = rules.providers[1]
    assert replicate.upstream is not None and replicate.upstream.base_path == "/v1"
    key = replicate.credential.key[0].read(rules.env)
    assert key is not None and replicate.credential.header_value(key) == "Bearer r8"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (MINIMAL + "    colour: blue\n", "providers.anthropic.colour", "unknown key"),
        (
            MINIMAL.replace("upstream: https://api.anthropic.com", "upstream: ftp://x"),
            "providers.anthropic.upstream",
            "http(s) URL",
        ),
        (
            MINIMAL.replace("/api/anthropic", "api/anthropic"),
            "providers.anthropic.match.prefix",
            "must look like",
        ),
        (
            MINIMAL
            + """
  other:
    match: {prefix: /api/anthropic}
    upstream: https://example.com
    allow: ["* example.com/**"]
    credential: {header: x, key: {env: X}}
""",
            "providers.other.match",
            "already claimed by anthropic",
        ),
        (
            """
providers:
  fal:
    match: {header: x-fal-target-url}
    allow: ["POST fal.run/**", "POST http://fal.run/**"]
    credential: {header: authorization, key: {env: FAL_KEY}}
""",
            "providers.fal.allow[1]",
            "only https",
        ),
        (
            """
providers:
  fal:
    match: {header: x-fal-target-url}
    allow: [queue.fal.run/**]
    credential: {header: authorization, key: {env: FAL_KEY}}
""",
            "providers.fal.allow[0]",
            "names no method: write 'POST queue.fal.run/**' (or '* queue.fal.run/**'",
        ),
        (
            MINIMAL.replace("key: {env: ANTHROPIC_API_KEY}", "key: {env: 'NOT A NAME'}"),
            "providers.anthropic.credential.key[0]",
            "environment variable",
        ),
        (
            MINIMAL.replace("header: x-api-key,", "header: x-api-key, format: Bearer,"),
            "providers.anthropic.credential.format",
            "{key}",
        ),
        ("providers: []\n", "providers", "must be a mapping"),
        ("providers: {}\n", "providers", "at least one provider"),
        ("surprise: 1\n" + MINIMAL, "surprise", "unknown key"),
        ("providers: [\n", "line", "not valid YAML"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert error.file == str(tmp_path / "rules.yaml")
    assert error.key.startswith(key)
    assert reason in error.reason
    assert str(tmp_path / "rules.yaml") in str(error)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load(tmp_path / "absent.yaml", {})


def test_dotenv_beside_rules_never_overrides_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=from-dotenv\nOTHER='quoted value'\n")
    assert load(path, {}).env["ANTHROPIC_API_KEY"] == "from-dotenv"
    assert load(path, {"ANTHROPIC_API_KEY": "real"}).env["ANTHROPIC_API_KEY"] == "real"
    assert load(path, {}).env["OTHER"] == "quoted value"
