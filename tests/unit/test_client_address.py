"""Who the client is behind a load balancer: the forwarding headers of a trusted proxy are read
from the right, so nothing a client writes into them can choose its address."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from addon.client_address import behind, group, trusts
from addon.config.model import ConfigError
from addon.config.rules import load

BALANCERS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def seen(peer: str, **headers: str) -> str:
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    return behind(peer, fields.get, BALANCERS)


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert seen("203.0.113.9", x_forwarded_for="198.51.100.1") == "203.0.113.9"
    assert behind("10.0.0.2", {"x-forwarded-for": "198.51.100.1"}.get, ()) == "10.0.0.2"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client wrote 6.6.6.6: never read
        ("6.6.6.6, 198.51.100.1, 10.1.1.1", "198.51.100.1"),  # two balancers in a row
        ("10.9.9.9, 10.1.1.1", "10.9.9.9"),  # all trusted: the left-most
        ("garbage, 198.51.100.1", "198.51.100.1"),
        ("198.51.100.1, garbage", "10.0.0.2"),  # not an address where one must be: the peer
        ("198.51.100.1:4711", "198.51.100.1"),
    ],
)
def test_the_right_most_untrusted_address_is_the_client(forwarded: str, client: str) -> None:
    assert seen("10.0.0.2", x_forwarded_for=forwarded) == client


def test_forwarded_is_read_when_x_forwarded_for_is_absent() -> None:
    value = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.1.1.1'
    assert seen("fd00::1", forwarded=value) == "2001:db8:cafe::17"
    assert group(seen("fd00::1", forwarded=value)) == "2001:db8:cafe::/64"
    assert seen("10.0.0.2") == "10.0.0.2"  # no header: the balancer itself


def test_trusts_reads_mapped_addresses_as_ipv4() -> None:
    assert trusts("::ffff:10.1.2.3", BALANCERS) and not trusts("11.0.0.1", BALANCERS)
    assert not trusts("not-an-address", BALANCERS)


def test_trusted_proxies_are_networks_or_the_rules_say_where(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    base = "providers:\n  openai: {profile: openai}\n"
    path.write_text(base + "server: {trusted_proxies: [10.0.0.0/8, '::1']}\n")
    assert [str(n) for n in load(path, {}).trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    path.write_text(base + "server: {trusted_proxies: [balancer]}\n")
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies\[0\]: is not an address"):
        load(path, {})
