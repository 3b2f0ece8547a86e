"""Routing on flows: pick the provider and target (router.py), then, once the request is
admitted and has its key, rewrite it for the upstream (forwarding.py)."""

from __future__ import annotations

from mitmproxy import http

from addon import flowstate
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
        decision = self.router.route(request.method, request.path, request.headers.get)
        if isinstance(decision, Route):
            flowstate.of(flow)["provider"] = decision.provider.name
        return decision

    def forward(self, flow: http.HTTPFlow, route: Route, key: str) -> None:
        """Rewrite the admitted request for its upstream, with `key` injected exactly once."""
        request, provider = flow.request, route.provider
        request.headers.fields = upstream_headers(
            request.headers.fields,
            provider,
            provider.credential.header,
            provider.credential.header_value(key),
            websocket=request.headers.get("upgrade", "").lower() == "websocket",
        )
        request.scheme, request.host, request.port = route.scheme, route.host, route.port
        request.path = route.path
        request.headers["host"] = route.authority
        state = flowstate.of(flow)
        state["upstream"] = f"{route.host}{route.path.partition('?')[0]}"
        state["decision"] = "forwarded"
