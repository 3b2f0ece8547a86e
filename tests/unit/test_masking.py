"""Masking on flows: every secret out of what is saved or shown, echoed keys out of streams."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.flow import Error
from mitmproxy.test import tflow
from support.repo import RULES

from addon.config.rules import load
from addon.keys.store import KeyStore
from addon.observe.masking import Masking

KEY = "sk-injected-key-000000000"
ADMIN_TOKEN = "admin-token-0123456789"
CLIENT = "client-secret-123456"


@pytest.fixture
def masking(tmp_path: Path) -> Masking:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.read_text() + "\nadmin: {token: {env: ADMIN}}\n")
    rules = load(path, {"OPENAI_API_KEY": KEY, "ADMIN": ADMIN_TOKEN})
    keys = KeyStore(rules)
    return Masking(lambda: (rules, keys))


def client_flow(masking: Masking) -> http.HTTPFlow:
    """A flow as routing leaves it: the client's credential seen, then replaced by the key."""
    flow = tflow.tflow(resp=True)
    flow.request.headers["authorization"] = f"Bearer {CLIENT}"
    masking.requestheaders(flow)
    flow.request.headers["authorization"] = f"Bearer {KEY}"
    flow.request.content = f'{{"note": "{CLIENT}"}}'.encode()
    return flow


def streamed(response: http.Response, chunks: Iterable[bytes]) -> bytes:
    stream = response.stream
    assert callable(stream)
    out = b""
    for chunk in [*chunks, b""]:
        result = stream(chunk)
        out += result if isinstance(result, bytes) else b"".join(result)
    return out


def test_the_client_credential_is_masked_in_the_request_only(masking: Masking) -> None:
    flow = client_flow(masking)
    assert flow.response is not None
    flow.response.content = f"you sent {CLIENT}, we used {KEY}".encode()
    masking.response(flow)
    request = flow.request
    assert request.headers["authorization"] == "Bearer <OPENAI_API_KEY>"
    sent = request.content or b""
    assert CLIENT.encode() not in sent
    assert b"<client authorization sha256:" in sent
    assert flow.response.content == f"you sent {CLIENT}, we used <OPENAI_API_KEY>".encode()
    assert flow.response.headers["content-length"] == str(len(flow.response.content))


def test_the_client_credential_is_forgotten_once_the_flow_ends(masking: Masking) -> None:
    flow = client_flow(masking)
    assert any(value == CLIENT for value, _ in masking.masks(flow).text)
    masking.error(flow)
    assert not any(value == CLIENT for value, _ in masking.masks(flow).text)
    assert any(value == KEY for value, _ in masking.masks(flow).text)


def test_a_key_echoed_in_a_stream_is_masked_across_chunks(masking: Masking) -> None:
    flow = client_flow(masking)
    assert flow.response is not None
    flow.response.headers["x-echo"] = KEY
    flow.response.stream = True
    masking.responseheaders(flow)
    body = f"data: {KEY} and {CLIENT} and {ADMIN_TOKEN}\n\n".encode()
    out = streamed(flow.response, (body[:12], body[12:20], body[20:]))
    assert len(out) == len(body)  # the head went out first: a same-length placeholder
    assert KEY.encode() not in out and ADMIN_TOKEN.encode() not in out
    assert b"<OPENAI_API_KEY>" in out and CLIENT.encode() in out
    assert KEY not in flow.response.headers["x-echo"]


def test_an_existing_stream_callable_still_runs_under_the_mask(masking: Masking) -> None:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.stream = lambda chunk: [chunk.replace(b"@", b"-")]  # say, a decoder
    masking.responseheaders(flow)
    assert streamed(flow.response, [KEY.replace("-", "@").encode()]) == b"<OPENAI_API_KEY>*********"


def test_a_buffered_response_is_left_for_the_response_hook(masking: Masking) -> None:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["x-echo"] = KEY
    masking.responseheaders(flow)
    assert not flow.response.stream and flow.response.headers["x-echo"] == KEY


def test_open_flows_are_masked_at_shutdown(masking: Masking) -> None:
    flow = client_flow(masking)
    masking.done()
    assert KEY not in flow.request.headers["authorization"]
    assert CLIENT.encode() not in (flow.request.content or b"")


def test_errors_and_websocket_messages_are_masked(masking: Masking) -> None:
    flow = client_flow(masking)
    flow.error = Error(f"upstream said: bad key {KEY}")
    masking.error(flow)
    assert KEY not in flow.error.msg

    socket = tflow.twebsocketflow()
    assert socket.websocket is not None
    socket.websocket.messages[0].content = f"echo {KEY}".encode()
    masking.websocket_end(socket)
    assert socket.websocket.messages[0].content == b"echo <OPENAI_API_KEY>"
