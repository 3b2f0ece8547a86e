"""One POST over HTTP/1.1 or HTTP/2 to keyrelay, and its answer read as a problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import cors
from .client import raw_exchange
from .proxy import KeyrelayProcess
from .transport import h2_request

PROTOCOLS = ("h1", "h2")


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
