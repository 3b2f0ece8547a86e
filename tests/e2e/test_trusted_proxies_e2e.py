"""keyrelay behind a load balancer, through the real mitmdump: with the balancer trusted, each
client behind it is itself (its own rate limit, its own address in the log), the admin
endpoints answer the balancer's loopback no more, and forged headers from anyone else count for
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.guard import rules

MODELS = "/api/openai/models"


def rules_text(trusted: list[str]) -> str:
    server = {"server": {"trusted_proxies": trusted}} if trusted else {}
    return rules(openai={"limits": {"rate": "1/minute"}}, top=server)


def from_client(client: object, address: str) -> int:
    reply = client.get(MODELS, {"x-forwarded-for": f"6.6.6.6, {address}"})  # type: ignore[attr-defined]
    return int(reply.status)


@pytest.mark.parametrize("trusted", [["127.0.0.1/32"], []])
def test_clients_behind_a_trusted_balancer_are_themselves(
    keyrelay_factory, make_client, upstream, tmp_path: Path, trusted: list[str]
) -> None:
    log = tmp_path / "access.log"
    proxy = keyrelay_factory(
        rules_text(trusted),
        extra_args=[
            "--set",
            "keyrelay_access_log=json",
            "--set",
            f"keyrelay_access_log_file={log}",
        ],
    )
    client = make_client(proxy.port)  # the balancer: every request comes from loopback
    first = [from_client(client, "198.51.100.1"), from_client(client, "198.51.100.1")]
    second = from_client(client, "198.51.100.2")
    health = client.get("/_keyrelay/health", {"x-forwarded-for": "198.51.100.3"}).status
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    identities = [line["identity"] for line in lines if line["path"].endswith("/models")]
    if trusted:
        assert first == [200, 429] and second == 200  # one limit each
        assert identities[:3] == ["ip:198.51.100.1", "ip:198.51.100.1", "ip:198.51.100.2"]
        limited = [line for line in lines if line.get("refusal") == "rate-limited"]
        assert limited and "rate" in limited[0]["detail"]  # the log says why, as the client saw
        assert health == 403  # the admin endpoints' loopback rule sees the client, not the LB
    else:
        assert first == [200, 429] and second == 429  # forged headers: one client, the peer
        assert set(identities[:3]) == {"ip:127.0.0.1"}
        assert health == 200
