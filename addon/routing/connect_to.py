"""`keyrelay_connect_to`: send the TCP connection for HOST:PORT to ADDR:PORT, like curl's
--connect-to. The Host header, SNI and certificate checks still use HOST."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.proxy import server_hooks

Address = tuple[str, int]


def parse(specs: Iterable[str]) -> dict[Address, Address]:
    """Parse `HOST:PORT=ADDR:PORT` entries; raises ValueError naming the bad entry."""
    table: dict[Address, Address] = {}
    for spec in specs:
        origin, eq, destination = spec.partition("=")
        if not eq:
            raise ValueError(f"'{spec}' is not HOST:PORT=ADDR:PORT")
        table[_address(spec, origin, lower=True)] = _address(spec, destination, lower=False)
    return table


def _address(spec: str, text: str, *, lower: bool) -> Address:
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{spec}': '{text}' is not HOST:PORT")
    return (host.lower() if lower else host, int(port))


class ConnectTo:
    """The option, and the upstream connections it redirects.

    mitmproxy reuses a connection only when its address equals the request's (host, port): the
    name is put back once connected, or every request would open a new connection (and the
    sixth per address would wait forever)."""

    def __init__(self) -> None:
        self.table: dict[Address, Address] = {}
        self._original: dict[str, Address] = {}  # server connection id -> the provider's address

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_connect_to",
            Sequence[str],
            [],
            "HOST:PORT=ADDR:PORT: connect to ADDR:PORT when the upstream is HOST:PORT; "
            "Host, SNI and certificate checks still use HOST. Repeat for more.",
        )

    def configure(self, updated: set[str]) -> None:
        if "keyrelay_connect_to" in updated:
            try:
                self.table = parse(ctx.options.keyrelay_connect_to)
            except ValueError as e:
                raise exceptions.OptionsError(f"keyrelay_connect_to: {e}") from None

    def address(self, host: str, port: int) -> Address:
        """Where a connection keyrelay opens itself goes (a WebRTC call's sideband)."""
        return self.table.get((host.lower(), port), (host, port))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        destination = self.table.get((address[0].lower(), address[1])) if address else None
        if address and destination:
            self._original[data.server.id] = address
            data.server.address = destination

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The setter refuses changes on an open connection to stop addons from redirecting
        # one; this only restores the name it was opened for.
        original = self._original.pop(data.server.id, None)
        if original:
            object.__setattr__(data.server, "address", original)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._original.pop(data.server.id, None)
