"""What keyrelay answers itself: a Refusal (the one error shape, RFC 9457 problem details served
as JSON) or a Reply (a preflight, an admin endpoint). Components return these as values; only
relay.answer turns them into a response."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

PROBLEM_BASE = "https://keyrelay.dev/problems/"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request keyrelay answers itself instead of forwarding.

    `reason` is a short slug: the problem type, the log's refusal reason and the metric label.
    `detail` must never hold a key, a traceback or an internal address.
    """

    status: int
    reason: str
    detail: str
    headers: tuple[tuple[str, str], ...] = field(default=())

    def body(self) -> bytes:
        return problem_body(self.status, self.reason, self.detail)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer that is not a refusal: `decision` says which kind (flowstate.Decision)."""

    status: int
    decision: Literal["preflight", "admin"]
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=())


Answer = Refusal | Reply


def problem_body(status: int, reason: str, detail: str) -> bytes:
    problem = {
        "type": PROBLEM_BASE + reason,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return json.dumps(problem).encode()
