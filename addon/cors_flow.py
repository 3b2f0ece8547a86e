"""CORS on flows: relay.py calls one function per hook; the decisions are in cors.py.

`requestheaders` answers preflights (before routing and authentication) and refuses browser
requests from disallowed origins. It notes the CORS headers the eventual response gets in the
flow's state, so every answer carries them: the upstream's response (`responseheaders`) and
keyrelay's own refusals (`decorate`, called by relay.answer), or the browser would hide them.
"""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

from addon import cors
from addon.problems import Refusal
from addon.rules import Rules

STATE = "keyrelay"
CORS_STATE = "cors"  # [[name, value], ...] for the response; JSON-friendly, never a secret

Answer = Callable[[http.HTTPFlow, Refusal], None]


def requestheaders(rules: Rules | None, flow: http.HTTPFlow, answer: Answer) -> bool:
    """True when the flow is answered (a preflight, or a disallowed browser request)."""
    request = flow.request
    header = request.headers.get
    # No Origin and no cross-site browser fetch: not a browser's cross-origin call, nothing to
    # answer, refuse or note. Most requests.
    if rules is None or (
        header("origin") is None and header("sec-fetch-site") not in cors.CROSS_ORIGIN_FETCH
    ):
        return False
    state = flow.metadata.setdefault(STATE, {})
    if cors.is_preflight(request.method, header):
        result = cors.preflight(rules, request.path, header)
        if isinstance(result, Refusal):
            answer(flow, result)
        else:
            flow.response = http.Response.make(result.status, b"", dict(result.headers))
            state["decision"] = "preflight"
        return True
    _, policy = cors.policy_for(rules, request.path, header)
    if refusal := cors.refuses(policy, header):
        answer(flow, refusal)
        return True
    if headers := cors.response_headers(policy, header("origin")):
        state[CORS_STATE] = [list(pair) for pair in headers]
    return False


def responseheaders(flow: http.HTTPFlow) -> None:
    """The upstream's CORS headers never reach the browser; keyrelay's own policy does."""
    if flow.response is not None and flow.metadata.get(STATE, {}).get("decision") != "preflight":
        decorate(flow)


def decorate(flow: http.HTTPFlow) -> None:
    response = flow.response
    if response is None:
        return
    headers = response.headers
    # Stripped even without an Origin: a cached answer must not carry the upstream's policy.
    if any(cors.is_cors_header(name) for name, _ in headers.fields):
        headers.fields = tuple(f for f in headers.fields if not cors.is_cors_header(f[0]))
    pairs = flow.metadata.get(STATE, {}).get(CORS_STATE)
    if not pairs:
        return
    for name, value in pairs:
        headers[name] = value
    vary = [v.strip() for v in headers.get_all("vary") for v in v.split(",") if v.strip()]
    if "origin" not in {v.lower() for v in vary} and "*" not in vary:
        headers["vary"] = ", ".join([*vary, "Origin"])
