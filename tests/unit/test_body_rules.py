"""Body rules: model allowlist, max_tokens cap, and bodies that cannot be checked."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support.guard import multipart_body

from addon.config.model import ConfigError, read
from addon.config.validation import ValidationSpec
from addon.guard.body_rules import check_body, check_path, check_query, prepare

SPEC = ValidationSpec(models=("gpt-4o-mini", "claude-sonnet-4-*"), max_tokens=100, max_n=2)
JSON = "application/json"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("content_type", "raw", "reason"),
    [
        (JSON, body(model="gpt-4o-mini", max_tokens=100), None),
        (JSON, body(model="claude-sonnet-4-5", max_tokens=1), None),
        (JSON, body(messages=[], max_output_tokens=5), None),  # no model named: nothing to check
        (JSON, body(model="gpt-4o-mini", max_tokens=5, n=2), None),
        (JSON, body(model="gpt-4o", max_tokens=5), "model-not-allowed"),
        (JSON, body(model=["gpt-4o-mini"], max_tokens=5), "model-not-allowed"),
        (JSON, body(model="gpt-4o-mini", max_tokens=101), "max-tokens-exceeded"),
        (JSON, body(model="gpt-4o-mini", max_completion_tokens=5000), "max-tokens-exceeded"),
        (JSON, body(model="gpt-4o-mini", max_tokens="lots"), "max-tokens-exceeded"),
        (JSON, body(model="gpt-4o-mini"), "max-tokens-required"),
        (JSON, b"[1, 2]", "max-tokens-required"),
        (JSON, body(model="gpt-4o-mini", max_tokens=5, n=3), "max-n-exceeded"),
        (JSON, body(max_tokens=5, num_images=4), "max-n-exceeded"),
        (JSON, b'{"model": "gpt-4o-mini", "model": "gpt-4o"}', "duplicate-field"),
        (JSON, b'{"model": ', "invalid-json"),
        ("application/vnd.api+json; charset=utf-8", body(model="o1"), "model-not-allowed"),
        ("application/x-www-form-urlencoded", b"model=dall-e-3&n=1", "model-not-allowed"),
        ("application/x-www-form-urlencoded", b"model=gpt-4o-mini&max_tokens=9", None),
        ("application/x-www-form-urlencoded", b"max_tokens=9&n=9", "max-n-exceeded"),
        # The provider may read any body as JSON: what keyrelay cannot read is refused.
        ("text/plain", body(model="gpt-4o", max_tokens=1), "unchecked-body"),
        ("", body(model="gpt-4o", max_tokens=1), "unchecked-body"),
        ("application/json, text/plain", body(model="gpt-4o"), "unchecked-body"),
        ("text/plain", b"", None),  # no body: nothing to check
    ],
)
def test_check_body(content_type: str, raw: bytes, reason: str | None) -> None:
    refusal = check_body(SPEC, [content_type] if content_type else [], raw)
    assert (refusal.reason if refusal else None) == reason
    if refusal and refusal.status in (403, 415):
        assert "rule " in refusal.detail  # the problem names the rule that refused


def batch(*params: dict[str, object], **top: object) -> bytes:
    """An Anthropic message batch: each request's body is in `params`."""
    return body(requests=[{"custom_id": str(i), "params": p} for i, p in enumerate(params)], **top)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (batch({"model": "claude-sonnet-4-5", "max_tokens": 5}), None),
        (
            batch({"model": "claude-sonnet-4-5", "max_tokens": 5}, {"model": "o1"}),
            "model-not-allowed",
        ),
        (batch({"model": "gpt-4o-mini", "max_tokens": 500}), "max-tokens-exceeded"),
        (batch({"model": "gpt-4o-mini"}), "max-tokens-required"),
        (batch({"model": "gpt-4o-mini", "max_tokens": 5, "n": 9}), "max-n-exceeded"),
        (body(requests=[{"custom_id": "a"}]), "batch-unreadable"),
        (body(requests="all of them"), "batch-unreadable"),
        (b'{"requests": [{"params": {"model": "gpt-4o-mini", "model": "o1"}}]}', "duplicate-field"),
        # OpenAI: the requests are in a file uploaded before; keyrelay never reads it.
        (body(input_file_id="file-abc", endpoint="/v1/chat/completions"), "batch-not-checked"),
    ],
)
def test_batches_are_checked_request_by_request(raw: bytes, reason: str | None) -> None:
    refusal = check_body(SPEC, [JSON], raw)
    assert (refusal.reason if refusal else None) == reason


def test_batches_are_checked_under_models_alone() -> None:
    """The hole was widest here: no max_tokens rule to trip over the batch's own shape."""
    models_only = ValidationSpec(models=("claude-haiku-*",))
    forbidden = batch({"model": "claude-opus-4-1", "max_tokens": 64000})
    assert check_body(models_only, [JSON], forbidden).reason == "model-not-allowed"  # type: ignore[union-attr]
    assert check_body(models_only, [JSON], batch({"model": "claude-haiku-4-5"})) is None
    openai_batch = body(input_file_id="file-abc", endpoint="/v1/chat/completions")
    assert check_body(models_only, [JSON], openai_batch).status == 403  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "websocket", "reason"),
    [
        ("model=gpt-4o-mini", True, None),
        ("model=o1-pro", True, "model-not-allowed"),
        ("model_id=o1-pro", False, "model-not-allowed"),
        ("model=gpt-4o-mini&model=o1-pro", True, "duplicate-field"),
        ("", True, "model-required"),  # a WebSocket's messages are never checked
        ("", False, None),  # a body, if any, is
        ("voice=alloy", False, None),
    ],
)
def test_check_query(query: str, websocket: bool, reason: str | None) -> None:
    models_only = ValidationSpec(models=SPEC.models)
    refusal = check_query(models_only, query, websocket=websocket)
    assert (refusal.reason if refusal else None) == reason
    assert check_query(ValidationSpec(max_n=5), "model=o1-pro", websocket=True) is None
    # Under max_tokens every request names its cap: a WebSocket's messages cannot.
    capped = check_query(SPEC, "model=gpt-4o-mini", websocket=True)
    assert capped is not None and capped.reason == "max-tokens-required"
    assert check_query(SPEC, "model=gpt-4o-mini", websocket=False) is None


def test_two_content_types_are_never_read_as_one() -> None:
    assert check_body(SPEC, [JSON, JSON], body(model="gpt-4o")).status == 415  # type: ignore[union-attr]
    values = {"content-type": [JSON, "text/plain"], "content-length": ["9"]}
    refusal = prepare(1000, "POST", lambda name: values.get(name, []))
    assert refusal is not None and (refusal.status, refusal.reason) == (
        400,
        "duplicate-content-type",
    )


MODEL_PART = 'Content-Disposition: form-data; name="model"\r\n\r\ndall-e-2'
TOKENS_PART = 'Content-Disposition: form-data; name="max_tokens"\r\n\r\n5'
FILE_PART = (
    'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
    "Content-Type: image/png\r\n\r\n\x89PNG\r\n\x00--X"
)


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ((TOKENS_PART, FILE_PART), None),
        ((MODEL_PART, TOKENS_PART, FILE_PART), "model-not-allowed"),
        # mitmproxy's decode_multipart reads only a part's first header line: not this reader.
        (("Content-Type: text/plain\r\n" + MODEL_PART, TOKENS_PART), "model-not-allowed"),
        (
            (MODEL_PART.replace("form-data;", "form-data; name=x;"), TOKENS_PART),
            "multipart-unreadable",
        ),
        (
            (MODEL_PART.replace('name="model"', "name*=utf-8''model"), TOKENS_PART),
            "multipart-unreadable",
        ),
        ((MODEL_PART.replace('"model"', '"mo\\"del"'), TOKENS_PART), "multipart-unreadable"),
        (("Content-Disposition: form-data\r\n\r\nx", TOKENS_PART), "multipart-unreadable"),
        (("X: y\r\n" + TOKENS_PART.replace("\r\n\r\n", "\r\n x\r\n\r\n"),), "multipart-unreadable"),
        (("Content-Transfer-Encoding: base64\r\n" + TOKENS_PART,), "multipart-unreadable"),
        ((TOKENS_PART, "Content-Type: a/b\n" + MODEL_PART), "multipart-unreadable"),  # bare LF
        ((TOKENS_PART + "\r\n--XyZ\nContent-Type: a/b",), "multipart-unreadable"),
        ((TOKENS_PART, MODEL_PART.replace("dall-e-2", "gpt-4o-mini")), None),
        ((TOKENS_PART, TOKENS_PART), "duplicate-field"),
    ],
)
def test_multipart_is_read_strictly(parts: tuple[str, ...], reason: str | None) -> None:
    content_type = "multipart/form-data; boundary=XyZ"
    refusal = check_body(SPEC, [content_type], multipart_body(*parts))
    assert (refusal.reason if refusal else None) == reason


def test_multipart_framing_must_be_exact() -> None:
    whole = multipart_body(TOKENS_PART)
    content_type = ["multipart/form-data; boundary=XyZ"]
    assert check_body(SPEC, content_type, whole) is None
    for broken in (whole[:-9], b"preamble\r\n" + whole, whole.replace(b"XyZ\r\n", b"XyZ \r\n")):
        refusal = check_body(SPEC, content_type, broken)
        assert refusal is not None and refusal.reason == "multipart-unreadable", broken
    for header in ("multipart/form-data", "multipart/form-data; boundary=a; boundary=XyZ"):
        refusal = check_body(SPEC, [header], whole)
        assert refusal is not None and refusal.reason == "multipart-unreadable", header


def test_prepare_refuses_what_cannot_be_buffered() -> None:
    def headers(**values: str) -> Callable[[str], list[str]]:
        return lambda name: (
            [values[name.replace("-", "_")]] if name.replace("-", "_") in values else []
        )

    assert prepare(1000, "POST", headers(content_length="10")) is None
    assert prepare(1000, "POST", headers(content_length="1001")).status == 413  # type: ignore[union-attr]
    assert prepare(1000, "POST", headers()).status == 411  # type: ignore[union-attr]
    assert prepare(1000, "GET", headers()) is None
    chunked = headers(transfer_encoding="chunked")
    assert prepare(1000, "DELETE", chunked).status == 411  # type: ignore[union-attr]
    gz = headers(content_length="10", content_encoding="gzip")
    assert prepare(1000, "POST", gz).status == 415  # type: ignore[union-attr]
    # mitmproxy's own streaming threshold lowers the limit: a streamed body is never checked.
    assert prepare(1000, "POST", headers(content_length="600"), 500).status == 413  # type: ignore[union-attr]


def test_the_default_max_body_bounds_the_time_a_check_holds_the_event_loop() -> None:
    """Checks run on the one event loop: a 30 MiB JSON body of tiny objects took 2-5 s, every
    other flow waiting meanwhile. The default now refuses such a body by its length (413)."""
    default = read(ValidationSpec, {"models": ["gpt-4o-mini"]}, "r.yaml")
    assert default.max_body == 4 << 20
    headers = {"content-length": [str(30 << 20)], "content-type": [JSON]}
    refusal = prepare(default.max_body, "POST", lambda name: headers.get(name, []))
    assert refusal is not None and refusal.status == 413
    tiny = body(model="gpt-4o-mini", a=[{"k": 1}] * 400_000)  # just under 4 MiB
    assert len(tiny) < default.max_body and check_body(default, [JSON], tiny) is None


def test_a_multipart_body_of_too_many_parts_is_refused() -> None:
    """Each part costs Python time on the event loop; real forms have a handful."""
    part = 'Content-Disposition: form-data; name="f"\r\n\r\nv'
    content_type = ["multipart/form-data; boundary=XyZ"]
    assert check_body(SPEC, content_type, multipart_body(TOKENS_PART, *[part] * 999)) is None
    refusal = check_body(SPEC, content_type, multipart_body(TOKENS_PART, *[part] * 1000))
    assert refusal is not None and refusal.reason == "multipart-unreadable"
    assert "1000 parts" in refusal.detail


def test_reading_a_validation_section() -> None:
    def parse(raw: dict[str, object]) -> ValidationSpec:
        return read(ValidationSpec, raw, "r.yaml", "validation")

    spec = parse({"models": ["a*"], "max_tokens": 5, "max_body": "2MiB"})
    assert spec == ValidationSpec(models=("a*",), max_tokens=5, max_body=2 << 20)
    assert spec.reads_body and not parse({"max_body": 10}).reads_body
    assert parse({"max_n": 2}).max_n == 2 and parse({"models": "gpt-4o"}).models == ("gpt-4o",)
    with pytest.raises(ConfigError, match=r"r.yaml: validation.max_body: must be a byte count"):
        parse({"max_body": "huge"})
    with pytest.raises(ConfigError, match=r"validation.max_tokens: must be at least 1"):
        parse({"max_tokens": 0})
    with pytest.raises(ConfigError, match=r"validation.max_tokens: must be a whole number, not a"):
        parse({"max_tokens": "5"})
    with pytest.raises(ConfigError, match=r"validation.model: unknown key"):
        parse({"model": ["x"]})


def test_a_model_named_in_the_path_is_held_to_the_allowlist() -> None:
    """Gemini names its model in the path, never in the body."""
    flash = ValidationSpec(models=("gemini-2.5-flash*",))
    path = "/v1beta/models/{}:streamGenerateContent"
    assert check_path(flash, path.format("gemini-2.5-flash")) is None
    assert check_path(flash, path.format("gemini-2.5-flash-lite")) is None
    refused = check_path(flash, path.format("gemini-2.5-pro"))
    assert refused is not None and refused.reason == "model-not-allowed"
    assert check_path(flash, "/v1beta/models/gemini-2.5-pro") is None  # models.get: no call
    assert check_path(ValidationSpec(max_n=2), path.format("gemini-2.5-pro")) is None
