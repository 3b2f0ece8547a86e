"""The unit a client address counts as: an IPv6 address by its /64, an IPv4-mapped one as IPv4;
and the client's address behind trusted proxies (`server: {trusted_proxies: [...]}`).

One subscriber usually holds a whole IPv6 /64, so counting single addresses would let one
client be 2^64 clients: to the rate limits (auth/identity.py) and to the connection cap per
address (transport/connections.py) alike.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable


@functools.lru_cache(maxsize=4096)  # asked per connection and per request; parsing costs more
def group(client_ip: str) -> str:
    """`2001:db8:1:2::/64` for any address in that /64; other addresses as they are."""
    try:
        address = ipaddress.ip_address(client_ip.partition("%")[0])  # no zone index
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if not address.is_loopback:
            return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parsed(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as X-Forwarded-For or Forwarded's `for=` spell it (a port, brackets and
    quotes allowed); None for `unknown`, an obfuscated name or garbage."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[Network, ...]
) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in nets)


def trusts(ip: str, trusted: tuple[Network, ...]) -> bool:
    """Whether an address is one of the trusted proxies."""
    address = _parsed(ip)
    return address is not None and _trusted(address, trusted)


def forwarded_for(value: str) -> list[str]:
    """The `for=` addresses of a Forwarded header, in order (RFC 7239)."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, given = pair.partition("=")
            if name.strip().lower() == "for":
                found.append(given)
    return found


def behind(
    peer: str,
    forwarded: Callable[[str], str | None],
    trusted: tuple[Network, ...],
) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
    address of X-Forwarded-For (else Forwarded) that is not a trusted proxy (what the last
    trusted one saw: what a client writes to the left is never read). A chain of trusted
    proxies only: its left-most. An entry that is no address where one must be: the peer's
    (nothing a client sends can choose the address)."""
    peer_address = _parsed(peer)
    if not trusted or peer_address is None or not _trusted(peer_address, trusted):
        return peer
    xff = forwarded("x-forwarded-for")
    chain = xff.split(",") if xff is not None else forwarded_for(forwarded("forwarded") or "")
    client = peer
    for entry in reversed(chain):
        address = _parsed(entry)
        if address is None:
            return peer
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client
