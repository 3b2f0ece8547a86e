"""EarlyRefusals: an answered request whose large body is still arriving is failed at connect
time with its problem, and its body is never kept."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.connection import Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import tflow

from addon.problems import Refusal
from addon.transport.early_refusal import SMALL_BODY, EarlyRefusals

REFUSAL = Refusal(401, "unauthenticated", "keyrelay needs a valid credential: none was sent")


def answered(headers: dict[str, str], content: bytes = REFUSAL.body()) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.headers.clear()
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    flow.response = http.Response.make(REFUSAL.status, content)
    return flow


def connect(early: EarlyRefusals, host: str) -> tuple[bool, Server]:
    server = Server(address=(host, 443))
    data = ServerConnectionHookData(server=server, client=tflow.tclient_conn())
    return early.server_connect(data), server


@pytest.mark.parametrize(
    "headers",
    [
        {"content_length": str(SMALL_BODY)},
        {},
        {"content_length": "a lot"},
        {"content_length": "\u00b2"},  # a digit to str.isdigit, not to int()
    ],
)
def test_a_small_or_absent_body_is_answered_as_usual(headers: dict[str, str]) -> None:
    flow = answered(headers)
    response = flow.response
    assert not EarlyRefusals().divert(flow, REFUSAL)
    assert flow.response is response
    assert not EarlyRefusals().divert(tflow.tflow(), None)  # not answered: nothing to divert


@pytest.mark.parametrize(
    "headers",
    [{"content_length": str(SMALL_BODY + 1)}, {"transfer_encoding": "gzip, Chunked"}],
)
def test_a_large_body_is_diverted_and_its_connection_fails_with_the_problem(
    headers: dict[str, str],
) -> None:
    early = EarlyRefusals()
    flow = answered(headers)
    assert early.divert(flow, REFUSAL)
    assert flow.response is None
    request = flow.request
    assert (request.scheme, request.port) == ("https", 443)
    assert request.host.endswith(".invalid") and flow.id in request.host
    assert callable(request.stream) and list(request.stream(b"x" * 1000)) == []

    unrelated, other = connect(early, "api.openai.com")
    assert not unrelated and other.error is None
    refused, server = connect(early, request.host)
    assert refused and server.error is not None
    diverted = early.diverted(flow)  # the refusal itself, a value, for the flow's error page
    assert diverted is not None
    _, (status, body) = diverted
    assert status == 401
    assert json.loads(body) == json.loads(REFUSAL.body())
    assert "unauthenticated" in server.error  # mitmproxy's message only names it
    assert connect(early, request.host)[0] is False  # failed once, then forgotten


def test_a_diverted_flow_that_ended_first_is_forgotten() -> None:
    early = EarlyRefusals()
    flow = answered({"content_length": "999999999"})
    assert early.divert(flow, REFUSAL)
    early.response(flow)
    refused, server = connect(early, flow.request.host)
    assert not refused and server.error is None


def test_an_answer_that_is_not_a_problem_still_fails_closed() -> None:
    early = EarlyRefusals()
    flow = answered({"transfer_encoding": "chunked"}, b"<html>no</html>")
    assert early.divert(flow, None)  # an answer that is no refusal
    _, server = connect(early, flow.request.host)
    assert server.error is not None
    diverted = early.diverted(flow)
    assert diverted is not None
    _, (status, body) = diverted
    assert status == 401 and json.loads(body)["type"].endswith("/refused")


def test_an_http2_answer_without_content_length_is_held_until_the_request_is_whole() -> None:
    """Its stream may have ended with the head: then `request` comes at once, and the held
    answer goes out with its own status instead of the diverted 502."""
    early = EarlyRefusals()
    flow = answered({})
    flow.request.http_version = "HTTP/2.0"
    response = flow.response
    assert early.divert(flow, REFUSAL)
    assert flow.response is None
    early.request(flow)
    assert flow.response is response
    assert not connect(early, flow.request.host)[0]  # nothing left pending
