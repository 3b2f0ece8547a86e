"""The Runware providers of the CE.SDK AI plugins, unmodified, in Node, with keyrelay as their
proxy URL (driver: cesdk/runware.mjs) and a fake Runware behind it (support/runware.py).
@runware/sdk-js (1.3.2) is not driven: it speaks only Runware's WebSocket API
(wss://ws-api.runware.ai/v1, the key in an authentication message), never HTTP to a URL given."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import TEST_KEYS
from support.runware import HOST, IMAGE, VIDEO, FakeRunware
from support.upstream import UpstreamServer

from clients.drivers import run_driver

TOKEN = "alice-token-7a21"


def test_the_plugins_generate_images_and_videos_through_keyrelay(
    cesdk_plugins: str, keyrelay_factory: Any, upstream: UpstreamServer
) -> None:
    """With client auth (a cookie: the providers set no header) and a budget: each task is the
    caller's, polled until done, and charged what the fake billed."""
    fake = FakeRunware(polls_before_done=1).install(upstream)
    rules = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}, "cookie": "kr"}},
        "budget": {"daily": 10.0},
        "providers": {
            "runware": {
                "profile": "runware",
                "prices": [{"model": "bfl:*", "unit": 0.08}, {"model": "google:3@*", "unit": 6.4}],
            }
        },
    }
    keyrelay = keyrelay_factory(
        yaml.safe_dump(rules), env={"KR_TOKENS": token_entry("alice", TOKEN)}
    )
    result = run_driver(
        cesdk_plugins,
        "cesdk/runware.mjs",
        ["image", "video"],
        {"PROXY_URL": f"{keyrelay.url}/api/runware", "PROXY_COOKIE": f"kr={TOKEN}"},
    )
    assert result["exit"] == 0 and result["ok"], (result["steps"], result["stderr"])
    assert result["steps"]["image"]["output"] == {"kind": "image", "url": IMAGE}
    assert result["steps"]["video"]["output"]["url"] == VIDEO

    image, video = fake.tasks
    assert [body[0]["taskType"] for body in fake.bodies] == [
        "imageInference",
        *["getResponse"] * 2,
        "videoInference",
        *["getResponse"] * 2,
    ]
    assert fake.tasks[image]["model"] == "bfl:5@1" and fake.tasks[video]["model"] == "google:3@3"
    for r in upstream.requests:
        assert (r.host or "").split(":")[0] == HOST
        assert r.header_all("authorization") == [f"Bearer {TEST_KEYS['RUNWARE_API_KEY']}"]
        assert r.header("cookie") is None
    usage = HttpClient(keyrelay.port).get("/_keyrelay/usage", [("Cookie", f"kr={TOKEN}")]).json()
    assert usage["reserved"] == 0
    assert usage["spent"] == pytest.approx(sum(fake.billed.values()))
