"""A real mitmdump that says it is a mitmproxy keyrelay was not checked against: keyrelay does not
start without keyrelay_unprotected, and with it starts without its patches, saying so.

The version is faked by the test's own launcher (mitmproxy.version.VERSION set before mitmdump
starts), not by anything keyrelay reads from its environment."""

from __future__ import annotations

import http.client
import socket
import sys

import pytest
from conftest import KeyrelayFactory
from support.client import HttpClient
from support.proxy import REPO, ProxyStartError

UNCHECKED = "12.3.99"
LAUNCH = (
    "import sys, mitmproxy.version as v; v.VERSION = sys.argv.pop(1); "
    "from mitmproxy.tools.main import mitmdump; mitmdump()"
)
# What scripts/_mitm passes that keyrelay needs, after the launcher and its version.
MITMDUMP = [
    sys.executable,
    "-c",
    LAUNCH,
    UNCHECKED,
    "--mode",
    "reverse:http://keyrelay.invalid",
    "--set",
    "connection_strategy=lazy",
    "-s",
    str(REPO / "addon" / "proxy.py"),
]


def test_an_unchecked_mitmproxy_does_not_start_keyrelay(keyrelay_factory: KeyrelayFactory) -> None:
    proc = keyrelay_factory(command=MITMDUMP, start=False)
    with pytest.raises(ProxyStartError):
        proc.start()
    output = proc.output()
    assert proc.returncode == 2, output
    [line] = [line for line in output.splitlines() if UNCHECKED in line]
    assert line.startswith(f"keyrelay: mitmproxy {UNCHECKED} is not one keyrelay was checked")
    assert line.endswith("the upstream timeouts and the JSON error page")
    assert "Traceback" not in output
    assert "listening at" not in output  # it never served


def test_keyrelay_unprotected_starts_it_without_the_patches(
    keyrelay_factory: KeyrelayFactory,
) -> None:
    relay = keyrelay_factory(command=MITMDUMP, extra_args=["--set", "keyrelay_unprotected=true"])
    assert "keyrelay: UNPROTECTED (keyrelay_unprotected=true): mitmproxy 12.3.99" in (
        relay.output()
    )
    # No head cap: mitmproxy reads a 100 KiB head to its end, where keyrelay's cap answers 431.
    head = b"GET /_keyrelay/health HTTP/1.1\r\nHost: localhost\r\nx-filler: "
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(head + b"a" * 100_000 + b"\r\n\r\n")
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        assert response.status != 431
    with HttpClient(relay.port) as client:
        assert client.get("/_keyrelay/health").status == 200
    assert relay.alive(), relay.describe()
