"""Replace mitmproxy's HTML error page with a JSON problem that names no internal address.

mitmproxy answers an unreachable upstream itself, after the `error` hook, with an HTML page
quoting the connect error (which names the internal address, e.g. a connect_to target). No
hook can replace that page, so the page builder is swapped once at load. keyrelay passes its
own failures (timeouts) through as messages of the form `keyrelay:<status>:<reason>:<detail>`,
which become that problem; any other message is dropped for a generic detail.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1, _http2, _http3

from addon.problems import problem_body

PREFIX = "keyrelay:"
KILLED = "Connection killed: "  # what mitmproxy puts before a server.error set by an addon

_GENERIC = {
    400: ("bad-request", "The request could not be parsed."),
    413: ("request-too-large", "The request is too large."),
    502: ("upstream-unavailable", "The upstream could not be reached or did not answer."),
}


def message(status: int, reason: str, detail: str) -> str:
    """An error message that becomes a problem with this status, reason and detail."""
    return f"{PREFIX}{status}:{reason}:{detail}"


def problem_for(status: int, message_text: str) -> tuple[int, bytes]:
    # mitmproxy may wrap it: "Connection killed: keyrelay:..." for a refused server_connect.
    # Only those two shapes: other messages quote what an upstream sent.
    ours = message_text.removeprefix(KILLED)
    found = ours.startswith(PREFIX)
    code, _, rest = ours[len(PREFIX) :].partition(":")
    if found and code.isdigit() and ":" in rest:
        reason, detail = rest.split(":", 1)
        return int(code), problem_body(int(code), reason, detail)
    reason, detail = _GENERIC.get(
        status, ("proxy-error", "keyrelay could not complete the request.")
    )
    return status, problem_body(status, reason, detail)


def _make_error_response(status_code: int, message: str = "") -> bytes:
    status, body = problem_for(status_code, message)
    response = http.Response.make(
        status,
        body,
        {"content-type": "application/json", "connection": "close"},
    )
    return http1.assemble_response(response)


def _format_error(status_code: int, message: str) -> bytes:
    # HTTP/2 and HTTP/3 fix the status and a text/html type before asking for the body.
    return problem_for(status_code, message)[1]


def install() -> None:
    _http1.make_error_response = _make_error_response  # type: ignore[assignment]
    _http2.format_error = _format_error  # type: ignore[assignment]
    _http3.format_error = _format_error  # type: ignore[assignment]
