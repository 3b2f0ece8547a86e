"""The address a request comes from, worked out once per flow: the peer's, or behind a trusted
proxy the client's (client_address.behind). Every place an address counts reads it here: the
anonymous identity, limits and budgets, the admin endpoints' loopback rule, the access log."""

from __future__ import annotations

from mitmproxy import http

from addon import client_address, flowstate, header_index


def resolve(flow: http.HTTPFlow, trusted: tuple[client_address.Network, ...]) -> None:
    """requestheaders, first: behind a trusted proxy, the client's address is kept with the
    flow (mitmweb and saved flows show it too)."""
    peer = flow.client_conn.peername
    if trusted and peer:
        forwarded = header_index.lookup(flow.request.headers)
        client = client_address.behind(str(peer[0]), forwarded, trusted)
        if client != str(peer[0]):
            flowstate.of(flow)["client"] = client


def address(flow: http.HTTPFlow) -> str:
    """The flow's client address."""
    if client := flowstate.of(flow).get("client"):
        return client
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "unknown"
