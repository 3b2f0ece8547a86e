"""Body rules through the real mitmdump: what is refused never reaches the provider."""

from __future__ import annotations

import json

from support.guard import multipart_body, rules

JSON = "application/json"
TOKENS_PART = 'Content-Disposition: form-data; name="max_tokens"\r\n\r\n5'


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


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


def test_bodies_keyrelay_cannot_read_are_refused_end_to_end(
    keyrelay_factory, make_client, upstream
) -> None:
    proxy = keyrelay_factory(
        rules(openai={"validation": {"models": ["gpt-4o-mini"], "max_tokens": 1024, "max_n": 1}})
    )
    client = make_client(proxy.port)
    chat = "/api/openai/chat/completions"
    expensive = body(model="gpt-4o", max_tokens=64000)

    def refused(reply) -> str:  # type: ignore[no-untyped-def]
        return f"{reply.status} {reply.json().get('type', '').rsplit('/', 1)[-1]}"

    # The provider may parse any of these as JSON: none reaches it unchecked.
    assert refused(client.post(chat, expensive, {"content-type": "text/plain"})) == (
        "415 unchecked-body"
    )
    assert refused(client.post(chat, expensive)) == "415 unchecked-body"  # no Content-Type
    twice = [("content-type", JSON), ("content-type", JSON)]  # mitmproxy joins them with ", "
    assert refused(client.post(chat, expensive, twice)) == "400 duplicate-content-type"
    assert refused(client.post(chat, json={"model": "gpt-4o-mini"})) == "403 max-tokens-required"
    assert refused(client.post(chat, json={"max_tokens": 9, "n": 8})) == "403 max-n-exceeded"

    boundary = "b0undary"
    form = multipart_body(
        # The Content-Type line first hides this part from mitmproxy's decode_multipart.
        'Content-Type: text/plain\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o',
        TOKENS_PART,
        boundary=boundary,
    )
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert refused(client.post("/api/openai/images/edits", form, multipart)) == (
        "403 model-not-allowed"
    )
    ok = client.post(
        "/api/openai/images/edits", form.replace(b"gpt-4o\r\n", b"gpt-4o-mini\r\n"), multipart
    )
    assert ok.status == 200
    assert upstream.only_request().target == "/v1/images/edits"  # nothing refused got through
