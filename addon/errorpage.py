"""Replace mitmproxy's HTML error page with a JSON problem that names no internal address, and
give it the headers the client needs to read it (CORS for an allowed origin, Retry-After).

mitmproxy answers a failed flow itself (an unreachable upstream, a connect refused by an
addon), after the `error` hook, with an HTML page quoting the connect error (which names the
internal address, e.g. a connect_to target). No hook can replace that page, so the page builders
are swapped once at load. A failure of keyrelay's own (a timeout, replay mode, an early refusal)
stays a value to the page: the `error` hook hands over its status and problem; any other
message (it may quote what an upstream sent) is dropped for a generic detail naming the provider.

The builders see only a status and a message, never the flow. So keyrelay's `error` hook calls
`expect` with what it knows of the flow (provider, headers, its own page): mitmproxy builds it
after that hook, in the same asyncio task (proxy/server.py `hook_task` awaits the hook, then
feeds its completion to the layers, which build the page without an await), so a ContextVar
carries it to the builder and to no other flow. HTTP/2 sends a fixed head (the status from the
error code, `text/html`) before it asks for the body: that head is rewritten too.

This reaches into mitmproxy's internals (the builders and the HTTP/2 error head), through
addon/engine: on a mitmproxy version it was not checked against start-up stops unless
keyrelay_unprotected, and then the page is left to mitmproxy.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.connection
from mitmproxy import ctx, hooks, http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1, _http2, _http3, _http_h2

from addon import engine
from addon.problems import Refusal, problem_body

HeaderPairs = tuple[tuple[str, str], ...]
Page = tuple[int, bytes]  # a status and its problem body

_GENERIC = {
    400: ("bad-request", "The request could not be parsed."),
    413: ("request-too-large", "The request is too large."),
    502: ("upstream-unavailable", "{who} could not be reached or did not answer."),
}


@dataclass(frozen=True, slots=True)
class Addressee:
    """What the `error` hook knows of the flow whose error page comes next."""

    flow: http.HTTPFlow
    message: str  # the flow's error: the message the builders are given
    provider: str | None
    headers: HeaderPairs  # besides the problem's own: CORS, Retry-After
    page: Page | None = None  # keyrelay's own answer; None: the generic one for the status
    # Told the status once the page is sent (the access log's line waits for it).
    then: list[Callable[[int], None]] = field(default_factory=list)

    def sent(self, response: http.Response) -> None:
        """The page went out: the flow shows it (mitmweb would show a pending flow), and
        mitmweb hears of it (no hook follows the page)."""
        self.flow.response = response
        for told in self.then:
            told(response.status_code)
        ctx.master.addons.trigger(hooks.UpdateHook([self.flow]))

    def problem(self, status: int) -> Page:
        return self.page or generic(status, self.provider)


_next: contextvars.ContextVar[Addressee | None] = contextvars.ContextVar(
    "keyrelay_error_page", default=None
)


def page(refusal: Refusal) -> Page:
    return refusal.status, problem_body(refusal.status, refusal.reason, refusal.detail)


def expect(
    flow: http.HTTPFlow,
    provider: str | None,
    headers: Iterable[tuple[str, str]],
    own: Page | None = None,
) -> None:
    """`error` hook: the page mitmproxy builds next in this task answers this flow: `own`,
    keyrelay's answer to it, or the generic problem for mitmproxy's status."""
    assert flow.error is not None
    _next.set(Addressee(flow, flow.error.msg, provider, tuple(headers), own))


def when_sent(flow: http.HTTPFlow, told: Callable[[int], None]) -> bool:
    """`error` hook, after `expect`: `told(status)` when the page for `flow` is sent, which is
    before the hook's task ends. False when none is expected for it. A page may still not be
    sent (the client left, the answer had begun)."""
    found = _next.get()
    if found is None or found.flow is not flow:
        return False
    found.then.append(told)
    return True


def generic(status: int, provider: str | None = None) -> Page:
    """The problem for a failure of mitmproxy's: its message is never quoted (it may name an
    internal address, or quote what an upstream sent)."""
    reason, detail = _GENERIC.get(
        status, ("proxy-error", "keyrelay could not complete the request.")
    )
    return status, problem_body(status, reason, detail.format(who=provider or "The upstream"))


def http1_page(refusal: Refusal) -> bytes:
    """A whole HTTP/1 answer, for a refusal made before there is a flow (an oversized head)."""
    status, body = page(refusal)
    headers = _headers(None)
    headers["connection"] = "close"
    return http1.assemble_response(http.Response.make(status, body, headers))


def _addressee(message_text: str | None = None) -> Addressee | None:
    """The flow this page answers, when the `error` hook named it (and it is this message)."""
    found = _next.get()
    if found is None or (message_text is not None and found.message != message_text):
        return None
    return found


def _head(addressee: Addressee | None) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), *(addressee.headers if addressee else ())]


def _headers(addressee: Addressee | None) -> http.Headers:
    return http.Headers([(k.encode(), v.encode()) for k, v in _head(addressee)])


def _make_error_response(status_code: int, message: str = "") -> bytes:
    addressee = _addressee(message)
    status, body = addressee.problem(status_code) if addressee else generic(status_code)
    headers = _headers(addressee)
    headers["connection"] = "close"
    _next.set(None)
    response = http.Response.make(status, body, headers)
    if addressee:
        addressee.sent(response)
    return http1.assemble_response(response)


def _format_error(status_code: int, message: str) -> bytes:
    # HTTP/2 and HTTP/3 ask for the body after sending the head (rewritten in _send_headers).
    addressee = _addressee(message)
    status, body = addressee.problem(status_code) if addressee else generic(status_code)
    _next.set(None)
    if addressee:
        addressee.sent(http.Response.make(status, body, _headers(addressee)))
    return body


def _error_head(headers: Any) -> int | None:
    """The status of mitmproxy's fixed HTTP/2 error head, or None for any other head."""
    if not isinstance(headers, list) or len(headers) != 3:
        return None
    (k1, status), (k2, server), (k3, kind) = headers
    if (k1, k2, k3, kind) != (b":status", b"server", b"content-type", b"text/html"):
        return None
    if server != version.MITMPROXY.encode() or not status.isdigit():
        return None
    return int(status)


_h2_send_headers = h2.connection.H2Connection.send_headers  # BufferedH2Connection's own


def _send_headers(self: Any, stream_id: int, headers: Any, *args: Any, **kwargs: Any) -> Any:
    if (status := _error_head(headers)) is not None:
        addressee = _addressee()
        if addressee is not None:
            status = addressee.problem(status)[0]
        pairs = [(k.encode(), v.encode()) for k, v in _head(addressee)]
        headers = [(b":status", b"%d" % status), *pairs]
    return _h2_send_headers(self, stream_id, headers, *args, **kwargs)


def install() -> None:
    if not engine.checked("errorpage"):
        return
    _http1.make_error_response = _make_error_response  # type: ignore[assignment]
    _http2.format_error = _format_error  # type: ignore[assignment]
    _http3.format_error = _format_error  # type: ignore[assignment]
    _http_h2.BufferedH2Connection.send_headers = _send_headers  # type: ignore[method-assign]
