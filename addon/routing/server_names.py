"""Which Host values keyrelay answers: the defence against DNS rebinding. Pure (no mitmproxy).

A page on rebind.attacker.example whose name the attacker points at 127.0.0.1 reaches a local
keyrelay as its own origin: its Origin matches its Host, `Sec-Fetch-Site` says same-origin, so
the CORS checks let it read every answer. The Host it sends still names the attacker, which is
what this checks. Loopback names (localhost, 127.0.0.1, [::1]) are always answered: a page can
only send them when it is served from this machine. Other names must be in `server_names:`
(rules.yaml). Without that list, a keyrelay listening beyond loopback answers any Host (its
names are known to its load balancer, not to it) and says so at start.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

# host, or [v6], then an optional :port (the port is not checked: any port is the same server)
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.\-_*]+))(?::\d{1,5})?")


def is_loopback(host: str) -> bool:
    """Whether a listen address or host name is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def host_name(value: str) -> str | None:
    """The name in a Host header or :authority, lower-case, without port or final dot; None
    when it is not one."""
    match = _HOST.fullmatch(value.strip().lower())
    if not match:
        return None
    return match["v6"] or match["name"].rstrip(".")


@dataclass(frozen=True, slots=True)
class ServerNames:
    names: tuple[str, ...] = ()  # lower-case; '*.example.com' matches its subdomains
    any_host: bool = False  # no list and a listener beyond loopback: every Host

    def accepts(self, value: str) -> bool:
        """Whether to answer a request with this Host (or :authority)."""
        if self.any_host:
            return True
        return _accepts(self.names, value)


@functools.lru_cache(maxsize=1024)  # a handful of Host values, each asked on every request
def _accepts(names: tuple[str, ...], value: str) -> bool:
    name = host_name(value)
    if name is None:
        return False
    if is_loopback(name):
        return True
    return any(name.endswith(p[1:]) if p.startswith("*.") else name == p for p in names)
