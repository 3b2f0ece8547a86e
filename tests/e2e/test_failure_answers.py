"""Answers keyrelay or mitmproxy builds when a flow fails (an unreachable upstream, a refusal
answered before its large body, a timeout) are JSON problems with the status they name and the
headers the client needs: CORS for an allowed origin, none for a request without one. Over
HTTP/1 and HTTP/2 alike."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from conftest import KeyrelayFactory
from support import cors
from support.answers import PROTOCOLS, ask
from support.cors import ALLOWED
from support.proxy import KeyrelayProcess
from support.recorded_sessions import FLOWS, REPLAY
from support.transport import rules_with_transport
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

BROWSER = [("origin", ALLOWED), ("sec-fetch-site", "same-site"), ("content-type", "text/plain")]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


@pytest.fixture
def unreachable(keyrelay_factory: KeyrelayFactory, closed_port: int) -> Iterator[KeyrelayProcess]:
    yield keyrelay_factory(cors.allowing(), upstream_port=closed_port)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unreachable_upstream_is_a_problem_an_allowed_origin_can_read(
    protocol: str, unreachable: KeyrelayProcess, closed_port: int
) -> None:
    answer = ask(protocol, unreachable, "/api/openai/chat/completions", BROWSER)
    assert answer.status == 502
    problem = answer.problem()
    assert problem["type"].endswith("/upstream-unavailable")
    assert problem["detail"] == "openai could not be reached or did not answer."
    assert str(closed_port) not in answer.body.decode()
    assert answer.cors["access-control-allow-origin"] == ALLOWED
    assert "Origin" in answer.headers["vary"]
    assert "server" not in answer.headers  # no mitmproxy version on the wire


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unreachable_upstream_gives_no_cors_to_a_request_without_origin(
    protocol: str, unreachable: KeyrelayProcess
) -> None:
    answer = ask(protocol, unreachable, "/api/openai/chat/completions", [])
    assert answer.status == 502
    assert answer.problem()["type"].endswith("/upstream-unavailable")
    assert answer.cors == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_connect_timeout_is_a_problem_an_allowed_origin_can_read(
    protocol: str, keyrelay_factory: KeyrelayFactory
) -> None:
    with socket.socket() as mute:  # accepts, never speaks: the TLS handshake never ends
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        rules = rules_with_transport({"timeouts": {"connect": 1}}, cors.allowing())
        relay = keyrelay_factory(rules, upstream_port=mute.getsockname()[1])
        answer = ask(protocol, relay, "/api/anthropic/v1/messages", BROWSER)
    assert answer.status == 504
    assert answer.problem()["type"].endswith("/upstream-timeout")
    assert answer.cors["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_first_byte_timeout_is_a_problem_an_allowed_origin_can_read(
    protocol: str, keyrelay_factory: KeyrelayFactory, upstream: UpstreamServer
) -> None:
    def silent(_req: RecordedRequest, w: ResponseWriter) -> None:
        w.sleep(3)

    upstream.route("POST", "/v1/messages", silent)
    rules = rules_with_transport({"timeouts": {"first_byte": 1}}, cors.allowing())
    answer = ask(protocol, keyrelay_factory(rules), "/api/anthropic/v1/messages", BROWSER)
    assert answer.status == 504
    assert answer.problem()["detail"] == "anthropic sent no response within 1s"
    assert answer.cors["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_replays_not_recorded_is_a_problem_an_allowed_origin_can_read(
    protocol: str, keyrelay_factory: KeyrelayFactory
) -> None:
    replay = [str(REPLAY), str(FLOWS / "openai.flows")]
    relay = keyrelay_factory(cors.allowing(), keys={}, hosts=(), command=replay)
    answer = ask(protocol, relay, "/api/openai/chat/completions", BROWSER)
    assert answer.status == 502
    assert answer.problem()["type"].endswith("/not-recorded")
    assert answer.cors["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_refusal_before_a_large_body_keeps_its_status_and_headers(
    protocol: str, keyrelay_factory: KeyrelayFactory
) -> None:
    auth = "    auth: {mode: tokens, tokens: {env: TOKENS}}\n\n  openai:\n"
    rules = cors.allowing().replace("\n  openai:\n", "\n" + auth, 1)
    relay = keyrelay_factory(rules, env={"TOKENS": "app:" + "0" * 64})
    answer = ask(
        protocol,
        relay,
        "/api/anthropic/v1/messages",
        BROWSER,
        b"x" * 16_000,
        declared_length=50 * 2**20,  # over 64 KiB: answered before it is read
    )
    assert answer.status == 401
    assert answer.problem()["type"].endswith("/unauthenticated")
    assert answer.headers["www-authenticate"] == 'Bearer realm="keyrelay"'
    assert answer.cors["access-control-allow-origin"] == ALLOWED
