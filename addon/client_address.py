"""The unit a client address counts as: an IPv6 address by its /64, an IPv4-mapped one as IPv4.

One subscriber usually holds a whole IPv6 /64, so counting single addresses would let one
client be 2^64 clients: to the rate limits (auth/identity.py) and to the connection cap per
address (transport/connections.py) alike.
"""

from __future__ import annotations

import functools
import ipaddress


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
