"""Answers keyrelay or mitmproxy builds when a flow fails (an unreachable upstream, a refusal
answered before its large body, a timeout) are JSON problems with the status they name and the
headers the client needs: CORS for an allowed origin, none for a request without one. Over
HTTP/1 and HTTP/2 alike."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import KeyrelayFactory
from support import cors
from support.client import raw_exchange
from support.cors import ALLOWED
from support.proxy import KeyrelayProcess
from support.transport import h2_request, rules_with_transport

PROTOCOLS = ("h1", "h2")
BROWSER = [("origin", ALLOWED), ("sec-fetch-site", "same-site"), ("content-type", "text/plain")]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/json", self.headers
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem

    @property
    def cors(self) -> dict[str, str]:
        return cors.cors_headers(self.headers.items())


def ask(
    protocol: str,
    relay: KeyrelayProcess,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes = b"{}",
    declared_length: int | None = None,
) -> Answer:
    """POST over HTTP/1.1 (plain) or HTTP/2 (TLS); declared_length announces more body than
    is sent."""
    if protocol == "h2":
        ca = relay.confdir / "mitmproxy-ca-cert.pem"
        status, got, frames = h2_request(
            relay.port, ca, path, headers, body, declared_length=declared_length
        )
        return Answer(status, got, b"".join(d for _, d in frames))
    length = declared_length if declared_length is not None else len(body)
    head = [f"POST {path} HTTP/1.1", "host: localhost", f"content-length: {length}"]
    head += [f"{k}: {v}" for k, v in headers] + ["connection: close"]
    raw = raw_exchange(relay.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body, timeout=10)
    top, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = top.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return Answer(int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, rest)


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
