"""The cap on connections per client address (the deadline and descriptors: e2e, in
tests/e2e/test_hostile_heads.py)."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons, tflow

from addon.transport.connections import Connections


def test_an_ipv6_client_is_capped_by_its_64() -> None:
    async def scenario() -> None:
        connections = Connections()
        with taddons.context(connections) as tctx:
            tctx.configure(connections, keyrelay_max_connections_per_address=2)
            clients = [tflow.tclient_conn() for _ in range(4)]
            peers = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:a::9", "2001:db8:9::1"]
            for client, peer in zip(clients, peers, strict=True):
                client.peername = (peer, 4000)
                client.error = None
                connections.client_connected(client)
            assert [c.error is not None for c in clients] == [False, False, True, False]
            connections.client_disconnected(clients[2])  # a refused one frees nothing
            connections.client_disconnected(clients[0])
            again = tflow.tclient_conn()
            again.peername, again.error = ("2001:db8:1:2::7", 1), None
            connections.client_connected(again)
            assert again.error is None

    asyncio.run(scenario())
