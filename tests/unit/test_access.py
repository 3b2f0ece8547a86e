"""AccessLog on flows: one masked line per request, and mitmweb's mark and summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tflow
from support.repo import RULES

from addon import flowstate
from addon.config.rules import load
from addon.observe import metrics
from addon.observe.access import ERROR_MARK, REFUSED_MARK, AccessLog
from addon.observe.redaction import Masks

KEY = "sk-injected-key-000000000"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


@pytest.fixture
def access(log_file: Path) -> Iterator[AccessLog]:
    rules = load(RULES, {})
    component = AccessLog(lambda: rules, lambda _flow: Masks({KEY: "<OPENAI_API_KEY>"}))
    with taddons.context(component) as tctx:
        tctx.configure(
            component, keyrelay_access_log="json", keyrelay_access_log_file=str(log_file)
        )
        yield component
        component.done()


def lines(log_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_file.read_text().splitlines()]


def openai_flow(access: AccessLog, path: str = "/v1/chat/completions") -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.host, flow.request.path = "api.openai.com", path
    access.requestheaders(flow)
    flowstate.of(flow)["provider"] = "openai"
    return flow


def test_a_refused_flow_is_marked_and_says_why(access: AccessLog, log_file: Path) -> None:
    flow = openai_flow(access)
    flowstate.refused(flowstate.of(flow), "rate-limited")
    flow.response = http.Response.make(429, b"{}")
    access.response(flow)
    assert flow.marked == REFUSED_MARK
    # The decision first: mitmweb's comment column is cut off.
    assert flow.comment.startswith("refused: rate-limited | provider: openai | rule: prefix")
    (line,) = lines(log_file)
    assert line["decision"] == "refused" and line["refusal"] == "rate-limited"
    assert line["status"] == 429 and "host" not in line  # nothing was forwarded


def test_a_json_line_holds_no_key_and_no_query(access: AccessLog, log_file: Path) -> None:
    flow = openai_flow(access, f"/v1/models?key={KEY}")
    flowstate.of(flow).update({"decision": "forwarded", "identity": f"token:{KEY}"})
    flow.error = Error(f"upstream closed: bad key {KEY}")
    access.error(flow)
    assert flow.marked == ERROR_MARK
    text = log_file.read_text()
    assert KEY not in text
    (line,) = lines(log_file)
    assert line["path"] == "/v1/models"
    assert line["decision"] == "error" and "status" not in line
    assert line["error"] == "upstream closed: bad key <OPENAI_API_KEY>"


def test_streamed_bytes_are_counted_as_they_go_out(access: AccessLog, log_file: Path) -> None:
    flow = openai_flow(access)
    flowstate.of(flow)["decision"] = "forwarded"
    assert flow.response is not None
    flow.response.stream = lambda chunk: [chunk, chunk]
    access.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    assert b"".join(stream(b"abc")) == b"abcabc"  # one stage of the pipe, after the others
    assert b"".join(stream(b"de")) == b"dede"
    access.response(flow)
    (line,) = lines(log_file)
    assert (line["decision"], line["host"], line["bytes_out"]) == (
        "forwarded",
        "api.openai.com",
        10,
    )
    assert not flow.marked


def test_flows_open_at_shutdown_are_logged(access: AccessLog, log_file: Path) -> None:
    openai_flow(access)
    access.done()
    (line,) = lines(log_file)
    assert line["error"] == "still open at shutdown"


def test_an_answered_replay_is_logged_as_replayed(access: AccessLog, log_file: Path) -> None:
    flow = openai_flow(access)
    flowstate.of(flow)["decision"] = "forwarded"
    flow.is_replay = "response"
    access.response(flow)
    assert lines(log_file)[0]["decision"] == "replayed"


def test_off_writes_nothing(tmp_path: Path) -> None:
    access = AccessLog(lambda: None, lambda _flow: Masks({}))
    log_file = tmp_path / "off.log"
    with taddons.context(access) as tctx:
        tctx.configure(access, keyrelay_access_log="off", keyrelay_access_log_file=str(log_file))
        flow = tflow.tflow(resp=True)
        access.requestheaders(flow)
        access.response(flow)
        access.done()
    assert not log_file.exists()
    assert flow.comment.startswith("error | provider: - | rule: - | identity: ip:127.0.0.1")


def test_a_log_file_in_a_missing_directory_is_an_options_error(tmp_path: Path) -> None:
    access = AccessLog(lambda: None, lambda _flow: Masks({}))
    with taddons.context(access) as tctx, pytest.raises(exceptions.OptionsError, match="not a dir"):
        tctx.configure(access, keyrelay_access_log_file=str(tmp_path / "no" / "access.log"))


def test_usage_and_cost_in_the_line_the_comment_and_the_metrics(
    access: AccessLog, log_file: Path
) -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("keyrelay_usage_total", provider="openai", model="gpt-4o", unit="input_tokens")
    spent = sample("keyrelay_spend_usd_total", provider="openai", model="gpt-4o")
    flow = openai_flow(access)
    state = flowstate.of(flow)
    state.update(decision="forwarded", model="gpt-4o", cost=0.00125)
    state["usage"] = {"input_tokens": 300, "output_tokens": 50}
    access.response(flow)
    (line,) = lines(log_file)
    assert line["usage"] == {"input_tokens": 300, "output_tokens": 50}
    assert line["cost"] == 0.00125 and line["model"] == "gpt-4o"
    assert "cost: $0.001250 (gpt-4o)" in flow.comment
    after = sample("keyrelay_usage_total", provider="openai", model="gpt-4o", unit="input_tokens")
    assert after - before == 300
    assert sample("keyrelay_spend_usd_total", provider="openai", model="gpt-4o") - spent == (
        pytest.approx(0.00125)
    )


def test_the_comment_shows_what_the_client_sent_masked_and_escaped(access: AccessLog) -> None:
    flow = tflow.tflow(resp=True)
    flow.request.path = "/api/openai/x\x1b[31m"
    flow.request.headers["host"] = "localhost:8080"
    flow.request.headers["authorization"] = f"Bearer {'y' * 5000}"  # too long to remember
    flow.request.headers["x-api-key"] = KEY
    access.requestheaders(flow)
    flowstate.refused(flowstate.of(flow), "no-route")
    access.response(flow)
    sent = flow.comment.split(" | sent: ")[1]
    assert sent == (
        "GET https://localhost:8080/api/openai/x%1B[31m authorization: <client credential> "
        "x-api-key: <client credential>"
    )
    assert flow.request.url == "https://localhost:8080/api/openai/x\x1b[31m"  # as called


def test_a_metered_session_has_a_second_line_at_its_end_not_counted_as_a_request(
    access: AccessLog, log_file: Path
) -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    flow = openai_flow(access, "/v1/realtime?model=gpt-realtime")
    flow.response = http.Response.make(101)
    state = flowstate.of(flow)
    state["decision"] = "forwarded"
    access.response(flow)  # the handshake's line
    requests = sample("keyrelay_requests_total", provider="openai", status="101")
    assert requests >= 1  # the handshake, counted as a request
    spent = sample("keyrelay_spend_usd_total", provider="openai", model="gpt-realtime")
    access.websocket_end(flow)  # nothing used yet: no line
    state.update(model="gpt-realtime", cost=0.25)
    state["usage"] = {"audio_output_tokens": 1000}
    access.websocket_end(flow)
    handshake, ended = lines(log_file)
    assert "cost" not in handshake and handshake["status"] == ended["status"] == 101
    assert ended["usage"] == {"audio_output_tokens": 1000} and ended["cost"] == 0.25
    assert ended["path"] == "/v1/realtime" and ended["model"] == "gpt-realtime"
    assert sample("keyrelay_requests_total", provider="openai", status="101") == requests
    assert sample("keyrelay_spend_usd_total", provider="openai", model="gpt-realtime") - spent == (
        pytest.approx(0.25)
    )
