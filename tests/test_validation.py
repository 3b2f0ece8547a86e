"""Body rules: model allowlist, max_tokens cap, and bodies that cannot be checked."""

from __future__ import annotations

import json

import pytest
from support.guard import rules

from addon.config_node import ConfigError, Node
from addon.validation import ValidationSpec, check_body, parse_validation, prepare

SPEC = ValidationSpec(models=("gpt-4o-mini", "claude-sonnet-4-*"), max_tokens=100)
JSON = "application/json"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("content_type", "raw", "reason"),
    [
        (JSON, body(model="gpt-4o-mini", max_tokens=100), None),
        (JSON, body(model="claude-sonnet-4-5", max_tokens=1), None),
        (JSON, body(messages=[]), None),  # no model named: nothing to check
        (JSON, body(model="gpt-4o"), "model-not-allowed"),
        (JSON, body(model=["gpt-4o-mini"]), "model-not-allowed"),
        (JSON, body(model="gpt-4o-mini", max_tokens=101), "max-tokens-exceeded"),
        (JSON, body(model="gpt-4o-mini", max_completion_tokens=5000), "max-tokens-exceeded"),
        (JSON, body(model="gpt-4o-mini", max_tokens="lots"), "max-tokens-exceeded"),
        (JSON, b'{"model": "gpt-4o-mini", "model": "gpt-4o"}', "duplicate-field"),
        (JSON, b'{"model": ', "invalid-json"),
        ("application/vnd.api+json; charset=utf-8", body(model="o1"), "model-not-allowed"),
        ("application/x-www-form-urlencoded", b"model=dall-e-3&n=1", "model-not-allowed"),
        ("application/x-www-form-urlencoded", b"model=gpt-4o-mini&max_tokens=9", None),
        ("text/plain", b'{"model": "gpt-4o"}', None),  # not a form the upstream reads fields of
    ],
)
def test_check_body(content_type: str, raw: bytes, reason: str | None) -> None:
    refusal = check_body(SPEC, content_type, raw)
    assert (refusal.reason if refusal else None) == reason
    if refusal and refusal.status == 403:
        assert "rule " in refusal.detail  # the problem names the rule that refused


def test_multipart_model_field_is_checked() -> None:
    boundary = "XyZ"
    parts = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ndall-e-2\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n\x89PNG\r\n--{boundary}--\r\n"
    ).encode("latin-1")
    refusal = check_body(SPEC, f"multipart/form-data; boundary={boundary}", parts)
    assert refusal is not None and refusal.reason == "model-not-allowed"


def test_prepare_refuses_what_cannot_be_buffered() -> None:
    spec = ValidationSpec(models=("m",), max_body=1000)
    headers = {"content-length": "10"}
    assert prepare(spec, "POST", headers.get) is None
    assert prepare(spec, "POST", {"content-length": "1001"}.get).status == 413  # type: ignore[union-attr]
    assert prepare(spec, "POST", {}.get).status == 411  # type: ignore[union-attr]
    assert prepare(spec, "GET", {}.get) is None
    chunked = {"transfer-encoding": "chunked"}
    assert prepare(spec, "DELETE", chunked.get).status == 411  # type: ignore[union-attr]
    gz = {"content-length": "10", "content-encoding": "gzip"}
    assert prepare(spec, "POST", gz.get).status == 415  # type: ignore[union-attr]
    # mitmproxy's own streaming threshold lowers the limit: a streamed body is never checked.
    assert prepare(spec, "POST", {"content-length": "600"}.get, 500).status == 413  # type: ignore[union-attr]
    assert prepare(ValidationSpec(), "POST", {}.get) is None  # no body rules: no demands


def test_parse_validation() -> None:
    spec = parse_validation(Node({"models": ["a*"], "max_tokens": 5, "max_body": "2MiB"}, "r.yaml"))
    assert spec == ValidationSpec(models=("a*",), max_tokens=5, max_body=2 << 20)
    with pytest.raises(ConfigError, match=r"r.yaml: validation.max_body: must be a size"):
        parse_validation(Node({"max_body": "huge"}, "r.yaml", "validation"))
    with pytest.raises(ConfigError, match=r"validation.max_tokens: must be at least 1"):
        parse_validation(Node({"max_tokens": 0}, "r.yaml", "validation"))
    with pytest.raises(ConfigError, match=r"validation.model: unknown key"):
        parse_validation(Node({"model": ["x"]}, "r.yaml", "validation"))


def test_body_rules_end_to_end(keyrelay_factory, make_client, upstream) -> None:
    proxy = keyrelay_factory(
        rules(
            openai={
                "validation": {"models": ["gpt-4o-mini"], "max_tokens": 256, "max_body": "64KiB"}
            }
        )
    )
    client = make_client(proxy.port)
    chat = "/api/openai/chat/completions"
    ok = client.post(chat, json={"model": "gpt-4o-mini", "max_tokens": 256})
    assert ok.status == 200
    assert upstream.only_request().json() == {"model": "gpt-4o-mini", "max_tokens": 256}

    refused = client.post(chat, json={"model": "gpt-4o", "max_tokens": 1})
    assert refused.status == 403
    assert refused.json()["type"].endswith("/model-not-allowed")
    assert "rule models" in refused.json()["detail"]
    too_many = client.post(chat, json={"model": "gpt-4o-mini", "max_tokens": 257})
    assert too_many.status == 403 and "rule max_tokens" in too_many.json()["detail"]
    assert client.post(chat, b"x" * 70_000, {"content-type": JSON}).status == 413
    chunked = make_client(proxy.port).request(
        "POST", chat, [body(model="gpt-4o")], {"content-type": JSON}
    )
    assert chunked.status == 411
    assert len(upstream.requests) == 1  # nothing refused reached the provider
