"""Which Host values keyrelay answers (DNS rebinding); e2e: tests/e2e/test_hostile_heads.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.guard import rules

from addon.config.model import ConfigError
from addon.config.rules import load
from addon.routing.server_names import ServerNames, host_name

MINIMAL = rules()  # support/guard.py: openai and fal


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost:8080", "localhost"),
        ("LocalHost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("app.example.com.", "app.example.com"),
        ("http://[", None),
        ("[", None),
        ("a b", None),
        ("a:99999999", None),
        ("", None),
    ],
)
def test_host_name(value: str, name: str | None) -> None:
    assert host_name(value) == name


LOOPBACK_ONLY = ServerNames()


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:1", "127.8.9.1", "[::1]:8080", "[::1]"]
)
def test_loopback_names_are_answered_by_default(host: str) -> None:
    assert LOOPBACK_ONLY.accepts(host)


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example",
        "rebind.attacker.example:8080",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "10.0.0.5",
        "[::1",
        "",
        "localhost:8080:1",
    ],
)
def test_other_names_are_not(host: str) -> None:
    assert not LOOPBACK_ONLY.accepts(host)


def test_server_names_add_names_and_subdomains() -> None:
    names = ServerNames(("keyrelay.example.com", "*.apps.example.com"))
    assert names.accepts("keyrelay.example.com:443")
    assert names.accepts("a.b.apps.example.com")
    assert names.accepts("localhost:8080")
    assert not names.accepts("apps.example.com")
    assert not names.accepts("evilkeyrelay.example.com")


def test_a_listener_beyond_loopback_without_names_answers_any_host() -> None:
    assert ServerNames(any_host=True).accepts("rebind.attacker.example")


def test_server_names_in_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("server_names: [KeyRelay.Example.com., '*.apps.example.com']\n" + MINIMAL)
    assert load(path, {}).server_names == ("keyrelay.example.com", "*.apps.example.com")


@pytest.mark.parametrize("bad", ["https://keyrelay.example.com", "a.example:8080", "*", "a*.b"])
def test_a_server_name_that_is_not_a_host_is_a_config_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"server_names: ['{bad}']\n" + MINIMAL)
    with pytest.raises(ConfigError, match=r"server_names\[0\].*not a host name"):
        load(path, {})
