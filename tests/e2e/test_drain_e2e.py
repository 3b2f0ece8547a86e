"""Deploys that drain, through the real mitmdump: SIGTERM during a stream lets it finish (its
last event and its settlement included); a new request on a connection already open gets 503
`draining` and the connection closes; new connections are refused; the process exits 0.
SIGHUP reloads the rules and keeps running."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from typing import Any

import yaml
from support import metered
from support.client import HttpClient
from support.upstream import UpstreamServer

STREAM = {
    "model": "claude-x",
    "max_tokens": 15,  # 15 words, 0.1 s apart: a stream of about two seconds
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def rules_text(budget: float = 1.0) -> str:
    provider = {
        "match": {"prefix": "/api/anthropic"},
        "upstream": "https://api.anthropic.com",
        "credential": {"header": "x-api-key", "key": {"env": "ANTHROPIC_API_KEY"}},
        "prices": [{"model": "*", "input": 0.0, "output": 1000.0}],
    }
    return yaml.safe_dump({"budget": {"daily": budget}, "providers": {"anthropic": provider}})


def refused_to_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_a_stream_finish_and_turns_new_requests_away(
    keyrelay_factory, upstream: UpstreamServer, tmp_path
) -> None:
    billed: list[dict[str, int]] = []
    upstream.route(
        "POST", "/v1/messages", metered.anthropic_words(billed, 0.1), host="api.anthropic.com"
    )
    log = tmp_path / "access.log"
    proc = keyrelay_factory(
        rules_text(),
        extra_args=[
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
        ],
    )
    kept = HttpClient(proc.port)  # a keep-alive connection opened before the signal
    assert kept.get("/_keyrelay/ready").status == 200
    streamed: dict[str, Any] = {}

    def stream() -> None:
        reply = HttpClient(proc.port).stream("POST", "/api/anthropic/v1/messages", json=STREAM)
        streamed.update(status=reply.status, body=reply.body)

    worker = threading.Thread(target=stream)
    worker.start()
    deadline = time.monotonic() + 5
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.05)  # the stream is under way once the upstream has its request
    time.sleep(0.3)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    turned_away = kept.get("/api/anthropic/v1/models")
    assert turned_away.status == 503 and turned_away.json()["type"].endswith("/draining")
    assert (turned_away.header("connection") or "").lower() == "close"
    assert refused_to_connect(proc.port)
    worker.join(10)
    assert streamed["status"] == 200 and b"message_stop" in streamed["body"]  # finished whole
    assert proc.stop(timeout=10) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    [settled] = [line for line in lines if line["path"].endswith("/messages")]
    assert settled["usage"]["output_tokens"] == billed[0]["output_tokens"]  # its final usage


def test_sighup_reloads_the_rules_and_keeps_running(keyrelay_factory, tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(budget=1.0))
    proc = keyrelay_factory(rules_path=rules)
    before = proc.mark()
    rules.write_text(rules_text(budget=2.0))
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGHUP)
    proc.wait_for_output("1 providers from", since=before, timeout=5)
    assert proc.alive()


def udp_ports() -> set[int]:
    """The local ports of every UDP socket on this machine (IPv4 and IPv6)."""
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            ports |= {int(line.split()[1].rsplit(":", 1)[1], 16) for line in f}
    return ports


def test_an_idle_instance_exits_0_on_sigterm_and_listens_on_tcp_only(keyrelay_factory) -> None:
    # Its reverse target was https once: mitmproxy then listened for HTTP/3 on UDP as well, and
    # stopping that server in a drain crashed the process as it exited, about one stop in two.
    for _ in range(5):
        proc = keyrelay_factory()
        assert proc.port not in udp_ports()
        with HttpClient(proc.port) as c:
            assert c.get("/_keyrelay/live").status == 200
        assert proc.stop(timeout=10) == 0, proc.output()[-2000:]
