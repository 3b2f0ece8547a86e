"""Masking secrets in flows: injected keys, echoed keys, the client's own credential."""

from __future__ import annotations

import gzip

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import tflow

from addon.observe import redaction

KEY = "sk-live-1234567890"
SECRETS = {KEY: "<OPENAI_API_KEY>"}


def test_scrub_text_masks_the_longest_secret_first() -> None:
    secrets = {"id-123456": "<ID>", "id-123456:secret-abcdef": "<FAL_KEY>"}
    assert redaction.scrub_text("Key id-123456:secret-abcdef", secrets) == "Key <FAL_KEY>"
    assert redaction.scrub_text("id-123456 alone", secrets) == "<ID> alone"


def test_short_values_are_never_treated_as_secrets() -> None:
    assert redaction.scrub_text("Bearer null", {"null": "<X>"}) == "Bearer null"


def test_scrub_flow_masks_request_response_and_error() -> None:
    f = tflow.tflow(resp=True)
    f.request.headers["authorization"] = f"Bearer {KEY}"
    f.request.path = f"/v1/x?key={KEY}"
    f.response.headers["x-echo"] = KEY
    f.response.headers["content-encoding"] = "gzip"
    f.response.raw_content = gzip.compress(f'{{"error": "bad key {KEY}"}}'.encode())
    f.response.headers["content-length"] = str(len(f.response.raw_content))
    f.error = mflow.Error(f"upstream said {KEY}")

    redaction.scrub_flow(f, SECRETS)

    assert f.request.headers["authorization"] == "Bearer <OPENAI_API_KEY>"
    assert f.request.path == "/v1/x?key=<OPENAI_API_KEY>"
    assert f.response.headers["x-echo"] == "<OPENAI_API_KEY>"
    assert f.response.content == b'{"error": "bad key <OPENAI_API_KEY>"}'
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))
    assert f.error.msg == "upstream said <OPENAI_API_KEY>"


def test_undecodable_body_is_scrubbed_raw_and_keeps_its_length_true() -> None:
    f = tflow.tflow(resp=True)
    f.response.headers["content-encoding"] = "gzip"
    f.response.raw_content = b"not gzip " + KEY.encode()
    f.response.headers["content-length"] = str(len(f.response.raw_content))
    redaction.scrub_flow(f, SECRETS)
    assert f.response.raw_content == b"not gzip <OPENAI_API_KEY>"
    assert f.response.headers["content-length"] == str(len(b"not gzip <OPENAI_API_KEY>"))


def test_client_credentials_cover_scheme_values_and_cookies() -> None:
    headers = http.Headers(
        authorization="Bearer client-token-abc",
        cookie="session=cookie-value-1; theme=dark",
        accept="*/*",
    )
    found = redaction.client_credentials(headers)
    assert {"Bearer client-token-abc", "client-token-abc", "cookie-value-1"} <= set(found)
    assert "dark" not in found and "*/*" not in found
    placeholder = found["client-token-abc"]
    assert "client-token-abc" not in placeholder
    assert (
        placeholder == f"<client authorization {redaction.fingerprint('Bearer client-token-abc')}>"
    )


def test_websocket_messages_are_scrubbed() -> None:
    f = tflow.twebsocketflow()
    f.websocket.messages[0].content = f"hello {KEY}".encode()
    redaction.scrub_flow(f, SECRETS)
    assert f.websocket.messages[0].content == b"hello <OPENAI_API_KEY>"


def test_stream_scrubber_masks_keys_split_across_chunks_and_holds_back_only_a_possible_key() -> (
    None
):
    scrub = redaction.StreamScrubber({"sk-live-abcdef123": "<KEY>"})
    assert scrub(b"data: hello\n\n") == b"data: hello\n\n"  # nothing held: timing intact
    assert scrub(b"error: bad key sk-li") == b"error: bad key "  # could be the key: held
    assert scrub(b"ve-abcdef123 rejected") == b"<KEY>************ rejected"  # same length
    assert scrub(b"sk-") == b""
    assert scrub(b"not a key") == b"sk-not a key"
    assert scrub(b"tail sk-live", end=True) == b"tail sk-live"


def test_stream_scrubber_without_secrets_passes_chunks_through() -> None:
    scrub = redaction.StreamScrubber({})
    assert scrub(b"abc") == b"abc" and scrub(b"", end=True) == b""


def test_client_credentials_are_bounded_in_number_and_length() -> None:
    many = "; ".join(f"c{i}=value-number-{i:05d}" for i in range(200))  # under 8 KiB
    found = redaction.client_credentials(http.Headers(cookie=many))
    assert len(found) == redaction.MAX_CLIENT_SECRETS
    huge = http.Headers(authorization="Bearer " + "x" * 20000)
    assert redaction.client_credentials(huge) == {}
    redaction.scrub_oversized_credentials(huge)
    assert huge["authorization"] == "<client authorization (too long to keep)>"


def test_client_secrets_are_masked_in_the_request_but_never_reshape_the_response() -> None:
    f = tflow.tflow(resp=True)
    f.request.headers["cookie"] = "theme=darkmode-please"
    f.response.content = b"the darkmode-please theme"
    client = redaction.client_credentials(f.request.headers)
    redaction.scrub_flow(f, {}, client)
    assert "darkmode-please" not in f.request.headers["cookie"]
    assert f.response.content == b"the darkmode-please theme"


def test_a_credential_too_long_in_bytes_is_masked_by_name_even_if_short_in_characters() -> None:
    # 3,000 characters, 9,000 bytes: too long to be remembered as a value (client_credentials
    # counts bytes), so it must be masked by its header's name, or it would stay as sent.
    value = "Bearer " + "€" * 3000
    headers = http.Headers(authorization=value)
    assert redaction.client_credentials(headers) == {}
    redaction.scrub_oversized_credentials(headers)
    assert headers["authorization"] == "<client authorization (too long to keep)>"


def test_a_credential_in_the_query_is_masked_as_sent_and_unescaped() -> None:
    found = redaction.query_credentials("/v1/models?alt=sse&key=AIza%2Bclient+1&pageSize=5")
    assert set(found) == {"AIza%2Bclient+1", "AIza+client+1", "AIza+client 1"}
    assert all(p.startswith("<client-key-sha256:") for p in found.values())
    assert redaction.query_credentials("/v1/models?K%65y=secret-1") == {
        "secret-1": "<client-key-" + redaction.fingerprint("secret-1") + ">"
    }
    assert redaction.query_credentials("/v1/models?pageSize=5&key=") == {}
    f = tflow.tflow()
    f.request.path = "/api/gemini/v1/models?key=AIzaClientKey"
    redaction.scrub_flow(f, {}, redaction.query_credentials(f.request.path))
    assert "AIzaClientKey" not in f.request.path and "?key=<client-key-sha256:" in f.request.path
