"""Routing on flows: pick the provider and target (router.py), then, once the request is
admitted and has its key, rewrite it for the upstream (forwarding.py)."""

from __future__ import annotations

from mitmproxy import http

from addon import flowstate, header_index
from addon.config.rules import Rules
from addon.problems import Refusal
from addon.routing.forwarding import upstream_headers
from addon.routing.router import Route, Router


class Routing:
    def __init__(self) -> None:
        self.router: Router | None = None

    def configure_rules(self, rules: Rules) -> None:
        self.router = Router(rules)

    def requestheaders(self, flow: http.HTTPFlow) -> Route | Refusal:
        """Where the request goes, or why it goes nowhere. Nothing is rewritten yet."""
        if self.router is None:
            return Refusal(503, "not-configured", "keyrelay has no rules loaded")
        request = flow.request
        header = header_index.lookup(request.headers)
        decision = self.router.route(request.method, request.path, header)
        if isinstance(decision, Route):
            flowstate.of(flow)["provider"] = decision.provider.name
        return decision

    def forward(self, flow: http.HTTPFlow, route: Route, key: str) -> None:
        """Rewrite the admitted request for its upstream, with `key` injected exactly once."""
        request, provider = flow.request, route.provider
        authority = route.authority
        fields = upstream_headers(
            request.headers.fields,
            provider,
            provider.credential.header,
            provider.credential.header_value(key),
            websocket=(header_index.lookup(request.headers)("upgrade") or "").lower()
            == "websocket",
        )
        host = (b"host", authority.encode("utf-8", "surrogateescape"))
        request.headers.fields = (host, *(f for f in fields if f[0].lower() != b"host"))
        # Through `data`: the scheme, host and port setters would each rewrite the Host header
        # (and :authority) again; it is written once here instead.
        data = request.data
        data.scheme, data.host, data.port = route.scheme.encode(), route.host, route.port
        if data.authority:  # HTTP/2 and HTTP/3
            request.authority = authority
        request.path = route.path
        state = flowstate.of(flow)
        state["upstream"] = f"{route.host}{route.path.partition('?')[0]}"
        state["decision"] = "forwarded"
