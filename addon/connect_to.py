"""`keyrelay_connect_to`: send the TCP connection for HOST:PORT to ADDR:PORT, like curl's
--connect-to. The Host header, SNI and certificate checks still use HOST."""

from __future__ import annotations

from collections.abc import Iterable

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
