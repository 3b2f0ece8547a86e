"""What an operator reads in mitmdump's output: the status a client got when the upstream could
not be reached or did not answer (502, 504: the error page mitmproxy sends after the `error`
hook), and the start-up summary of the rules in effect, at start and after a reload."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml
from conftest import KeyrelayFactory
from support.access_log import log_lines
from support.answers import PROTOCOLS, ask
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import DEFAULT_RULES, TEST_KEYS
from support.transport import rules_with_transport
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

TOKEN = "ops-token-4e1b9d"


def json_log(tmp_path: Path) -> tuple[Path, list[str]]:
    log = tmp_path / "access.log"
    args = ["--set", "keyrelay_access_log=json", "--set", f"keyrelay_access_log_file={log}"]
    return log, args


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unreachable_upstream_is_logged_with_the_502_the_client_got(
    protocol: str, keyrelay_factory: KeyrelayFactory, closed_port: int, tmp_path: Path
) -> None:
    log, args = json_log(tmp_path)
    relay = keyrelay_factory(upstream_port=closed_port, extra_args=args)
    assert ask(protocol, relay, "/api/openai/chat/completions", []).status == 502
    (line,) = log_lines(log, 1)
    assert line["status"] == 502 and line["decision"] == "error" and line["error"]
    assert line["provider"] == "openai"
    with HttpClient(relay.port) as client:
        metrics = client.get("/_keyrelay/metrics").body.decode()
    assert 'keyrelay_requests_total{provider="openai",status="502"} 1.0' in metrics


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_upstream_timeout_is_logged_with_the_504_the_client_got(
    protocol: str, keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    def silent(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.sleep(3)

    upstream.route("POST", "/v1/messages", silent)
    log, args = json_log(tmp_path)
    relay = keyrelay_factory(rules_with_transport({"timeouts": {"first_byte": 1}}), extra_args=args)
    assert ask(protocol, relay, "/api/anthropic/v1/messages", []).status == 504
    (line,) = log_lines(log, 1)
    assert line["status"] == 504 and line["provider"] == "anthropic"


def test_the_text_line_shows_502_not_a_dash(
    keyrelay_factory: KeyrelayFactory, closed_port: int
) -> None:
    relay = keyrelay_factory(upstream_port=closed_port)
    with HttpClient(relay.port) as client:
        assert client.post("/api/openai/chat/completions", json={}).status == 502
    relay.wait_for_output(r"openai POST api\.openai\.com/v1/chat/completions 502 .* error error=")


def test_a_client_that_left_is_still_logged(
    keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """No page goes out to a client that left: its line is written all the same, without a
    status (what it got: nothing)."""

    def slow(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.sleep(2)

    upstream.route("POST", "/v1/messages", slow)
    log, args = json_log(tmp_path)
    relay = keyrelay_factory(extra_args=args)
    with socket.create_connection(("127.0.0.1", relay.port)) as s:
        s.sendall(
            b"POST /api/anthropic/v1/messages HTTP/1.1\r\nhost: localhost\r\n"
            b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        )
        upstream.wait_for_requests(1)
    (line,) = log_lines(log, 1)
    assert "status" not in line and line["decision"] == "error"


def rules_text(budget: float) -> str:
    rules = yaml.safe_load(DEFAULT_RULES.read_text())
    rules["defaults"]["auth"] = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}
    rules["defaults"]["cors"] = {"origins": ["https://app.example.com"]}
    rules["providers"]["anthropic"]["limits"] = {"rate": ["30/minute"], "concurrent": 2}
    rules["budget"] = {"daily": budget}
    return yaml.safe_dump(rules, sort_keys=False)


def test_the_start_up_summary_at_start_and_after_a_reload(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    relay = keyrelay_factory(rules_text(3.0), env={"KR_TOKENS": token_entry("ops", TOKEN)})
    block = r"keyrelay: in effect from .*rules\.yaml:\n(?:.*\n)*?  runware "
    first = relay.wait_for_output(block).group(0)
    assert "  limits and budgets kept in: memory (this process only)" in first
    assert "  budget per identity: $3.00 a day" in first
    assert (
        "  anthropic (prefix /api/anthropic): auth tokens from $KR_TOKENS; "
        "cors https://app.example.com; limits 30 per 60s, 2 at once; budget none"
    ) in first
    assert "  fal (header x-fal-target-url): auth tokens from $KR_TOKENS;" in first
    mark = relay.mark()
    assert relay.rules_path is not None
    relay.rules_path.write_text(rules_text(4.5))  # seen within a second: reloaded
    again = relay.wait_for_output(block, timeout=10, since=mark).group(0)
    assert "  budget per identity: $4.50 a day" in again
    out = relay.output()
    assert len(re.findall("keyrelay: in effect from", out)) == 2
    for secret in (TOKEN, token_entry("ops", TOKEN).split(":")[1], *TEST_KEYS.values()):
        assert secret not in out
