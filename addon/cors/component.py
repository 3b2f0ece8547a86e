"""CORS on flows; the decisions are in answers.py.

`requestheaders` answers preflights (before routing and authentication) and refuses browser
requests from disallowed origins. It notes in the flow's state the CORS headers the eventual
response gets, so every answer carries them: the upstream's response (`responseheaders`) and
keyrelay's own answers (`decorate`, called by relay.answer), or the browser would hide them.
"""

from __future__ import annotations

from mitmproxy import http

from addon import flowstate, header_index
from addon.config.rules import Rules
from addon.cors import answers
from addon.problems import Answer, Refusal, Reply


class Cors:
    def __init__(self) -> None:
        self.rules: Rules | None = None

    def requestheaders(self, flow: http.HTTPFlow) -> Answer | None:
        """A preflight's answer, or the refusal of a disallowed browser request."""
        request = flow.request
        header = header_index.lookup(request.headers)
        # No Origin and no cross-site browser fetch: not a browser's cross-origin call, nothing
        # to answer, refuse or note. Most requests.
        rules = self.rules
        if rules is None or (
            header("origin") is None
            and (header("sec-fetch-site") or "").lower() not in answers.CROSS_ORIGIN_FETCH
        ):
            return None
        if answers.is_preflight(request.method, header):
            result = answers.preflight(rules, request.path, header)
            if isinstance(result, Refusal):
                return result
            return Reply(result.status, "preflight", headers=result.headers)
        _, policy = answers.policy_for(rules, request.path, header)
        if refusal := answers.refuses(policy, header):
            return refusal
        if headers := answers.response_headers(policy, header("origin")):
            flowstate.of(flow)["cors"] = [list(pair) for pair in headers]
        return None

    def attribute(self, flow: http.HTTPFlow) -> None:
        """A refusal before routing named a provider (a refused preflight, a disallowed
        target): the provider it concerns, as far as can be told, for the log and metrics."""
        state = flowstate.of(flow)
        if "provider" in state or self.rules is None:
            return
        header = header_index.lookup(flow.request.headers)
        if provider := answers.provider_for(self.rules, flow.request.path, header):
            state["provider"] = provider.name

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """The upstream's CORS headers never reach the browser; keyrelay's own policy does."""
        decorate(flow)


def answer_headers(flow: http.HTTPFlow) -> list[tuple[str, str]]:
    """The CORS headers of an answer built without a response to decorate (mitmproxy's error
    page, errorpage.py): none for a disallowed origin or a request that is not a browser's."""
    pairs = flowstate.of(flow).get("cors")
    return [*((name, value) for name, value in pairs), ("vary", "Origin")] if pairs else []


def decorate(flow: http.HTTPFlow) -> None:
    """Put keyrelay's CORS headers on the response, and only those. A preflight's answer
    carries its own already."""
    response = flow.response
    if response is None or flowstate.of(flow).get("decision") == "preflight":
        return
    headers = response.headers
    # Stripped even without an Origin: a cached answer must not carry the upstream's policy.
    if any(name.startswith("access-control-") for name in header_index.index(headers)):
        headers.fields = tuple(f for f in headers.fields if not answers.is_cors_header(f[0]))
    pairs = flowstate.of(flow).get("cors")
    if not pairs:
        return
    for name, value in pairs:
        headers[name] = value
    vary = [v.strip() for v in headers.get_all("vary") for v in v.split(",") if v.strip()]
    if "origin" not in {v.lower() for v in vary} and "*" not in vary:
        headers["vary"] = ", ".join([*vary, "Origin"])
