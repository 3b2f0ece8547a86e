"""How rules.yaml's sections are read (addon/config/model.py): sizes, strict scalars, and errors
that name the key a user must fix."""

from __future__ import annotations

import pytest

from addon.config.model import ConfigError, parse_size, read
from addon.config.rules import RulesDocument
from addon.config.transport import TransportSpec
from addon.config.validation import ValidationSpec


@pytest.mark.parametrize(
    ("written", "size"),
    [
        (1048576, 1048576),
        ("512", 512),
        ("100 MiB", 100 << 20),
        ("4MB", 4_000_000),  # SI units are 1000-based...
        ("64 kib", 64 << 10),
        ("64kb", 64_000),
        ("2g", 2 << 30),  # ...mitmproxy's own notation (no 'b') is 1024-based
        (" 1 GiB ", 1 << 30),
    ],
)
def test_one_size_notation_for_every_size_key(written: object, size: int) -> None:
    assert parse_size(written) == size
    assert read(ValidationSpec, {"max_body": written}, "r.yaml").max_body == size
    assert read(TransportSpec, {"max_request_bytes": written}, "r.yaml").max_request_bytes == size


@pytest.mark.parametrize("written", ["lots", "1.5 MiB", "-1", "1 TiB", True])
def test_a_size_that_is_not_one_is_refused_at_its_key(written: object) -> None:
    with pytest.raises(ConfigError) as refused:
        read(TransportSpec, {"max_request_bytes": written}, "r.yaml", "providers.x.transport")
    assert refused.value.key == "providers.x.transport.max_request_bytes"


def test_a_key_written_without_a_value_is_as_if_not_written() -> None:
    spec = read(TransportSpec, {"timeouts": None, "upstream_http2": None}, "r.yaml")
    assert spec == TransportSpec()
    document = read(RulesDocument, {"defaults": None, "providers": {"openai": {}}}, "r.yaml")
    assert document.defaults.limits is None


def test_a_written_mistake_is_named_before_a_missing_key() -> None:
    """Two mistakes: the one in what was written is the one reported first."""
    with pytest.raises(ConfigError) as refused:
        read(RulesDocument, {"providers": {"x": {"validation": {"max_n": 0}}}, "zz": 1}, "r.yaml")
    assert (refused.value.key, refused.value.reason) in {
        ("zz", "unknown key"),
        ("providers.x.validation.max_n", "must be at least 1"),
    }
    with pytest.raises(ConfigError) as refused:
        read(RulesDocument, {"admin": {"loopback": "yes"}}, "r.yaml")
    assert refused.value.key == "admin.loopback"  # not "providers: is required"
    assert refused.value.reason == "must be true or false, not a string"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ({"max_tokens": 1.5}, "must be a whole number, not float"),
        ({"max_tokens": True}, "must be a whole number, not a boolean"),
        ({"models": [1]}, "must be a string, not int"),
        ({"models": {"a": 1}}, "must be a list, not a mapping"),
    ],
)
def test_yaml_types_are_taken_as_written(written: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        read(ValidationSpec, written, "r.yaml", "validation")
    assert refused.value.reason == reason
