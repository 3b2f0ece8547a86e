"""Routing on flows: pick the provider and target (router.py), then, once the request is
admitted and has its key, rewrite it for the upstream (forwarding.py)."""

from __future__ import annotations

import logging

from mitmproxy import http

from addon import flowstate, header_index
from addon.config.credential import CLIENT_CREDENTIAL_HEADERS
from addon.config.rules import Rules
from addon.problems import Refusal
from addon.routing.forwarding import upstream_headers, upstream_target
from addon.routing.router import Route, Router
from addon.routing.server_names import ServerNames, is_loopback

logger = logging.getLogger(__name__)
_SHOWN = 100  # characters of a refused Host quoted in the problem


class Routing:
    def __init__(self) -> None:
        self.router: Router | None = None
        self.server_names = ServerNames()
        self.credentials = CLIENT_CREDENTIAL_HEADERS

    def configure_rules(self, rules: Rules, listen_host: str) -> None:
        self.router = Router(rules)
        self.credentials = rules.credential_headers
        for provider in rules.providers:
            for rule in provider.catalogue.allow:
                if rule.pattern.opens_everything:
                    logger.warning(
                        "keyrelay: %s: allow '%s' opens every call the key can make on %s, "
                        "listings, account and credentials included",
                        provider.name,
                        rule.text,
                        rule.pattern.host,
                    )
        any_host = not rules.server_names and not is_loopback(listen_host)
        self.server_names = ServerNames(rules.server_names, any_host)
        if any_host:
            logger.warning(
                "keyrelay: listening on %s without server_names in rules.yaml: every Host is "
                "answered, so a DNS-rebinding page can read the answers; list this server's "
                "names in server_names",
                listen_host or "all interfaces",
            )

    def misdirected(self, flow: http.HTTPFlow) -> Refusal | None:
        """A 421 for a Host (or HTTP/2 :authority) this keyrelay does not serve: a page whose
        name was rebound to this address must not read keyrelay's answers."""
        request = flow.request
        host = header_index.lookup(request.headers)("host")
        # Several Host fields (the index joins them with ", ") are checked one by one.
        if host is not None and "," in host:
            names = request.headers.get_all("host")
        else:
            names = [] if host is None else [host]
        if request.authority:
            names.append(request.authority)
        for name in names:
            if not self.server_names.accepts(name):
                shown = name if len(name) <= _SHOWN else name[:_SHOWN] + "..."
                return Refusal(
                    421,
                    "misdirected-request",
                    f"keyrelay does not serve the host {shown!r} (see server_names in rules.yaml)",
                )
        return None

    def requestheaders(self, flow: http.HTTPFlow) -> Route | Refusal:
        """Where the request goes, or why it goes nowhere. Nothing is rewritten yet."""
        if self.router is None:
            return Refusal(503, "not-configured", "keyrelay has no rules loaded")
        request = flow.request
        header = header_index.lookup(request.headers)
        decision = self.router.route(request.method, request.path, header)
        if isinstance(decision, Route):
            state = flowstate.of(flow)
            state["provider"] = decision.provider.name
            if decision.operation is not None:
                state["operation"] = decision.operation.name
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
            credentials=self.credentials,
            websocket=header_index.asks_for_websocket(request.headers),
        )
        host = (b"host", authority.encode("utf-8", "surrogateescape"))
        request.headers.fields = (host, *(f for f in fields if f[0].lower() != b"host"))
        # Through `data`: the scheme, host and port setters would each rewrite the Host header
        # (and :authority) again; it is written once here instead.
        data = request.data
        data.scheme, data.host, data.port = route.scheme.encode(), route.host, route.port
        if data.authority:  # HTTP/2 and HTTP/3
            request.authority = authority
        request.path = upstream_target(route.path)
        state = flowstate.of(flow)
        state["upstream"] = f"{route.host}{route.path.partition('?')[0]}"
        state["decision"] = "forwarded"
