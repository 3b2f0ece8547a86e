"""The EachLabs providers of the CE.SDK AI plugins, unmodified, in Node, with keyrelay as their
proxy URL (driver: cesdk/eachlabs.mjs) and a fake EachLabs behind it (support/eachlabs.py)."""

from __future__ import annotations

from typing import Any

import yaml
from support.eachlabs import HOST, IMAGE, UPLOADED, VIDEO, FakeEachLabs
from support.guard import token_entry
from support.upstream import UpstreamServer

from clients.drivers import run_driver

TOKEN = "alice-token-93be"


def test_the_plugins_generate_images_and_videos_through_keyrelay(
    cesdk_plugins: str,
    keyrelay_factory: Any,
    upstream: UpstreamServer,
    TEST_KEYS: dict[str, str],
) -> None:
    """With client auth (its session in a cookie: the plugins' client sets no header) and so
    ownership on: each prediction is polled by its creator until done."""
    fake = FakeEachLabs(polls_before_done=1).install(upstream)
    rules = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}, "cookie": "kr"}},
        "providers": {"eachlabs": {"profile": "eachlabs"}},
    }
    env = {"KR_TOKENS": token_entry("alice", TOKEN)}
    keyrelay = keyrelay_factory(yaml.safe_dump(rules), env=env)
    result = run_driver(
        cesdk_plugins,
        "cesdk/eachlabs.mjs",
        ["image", "edit", "video"],
        {"PROXY_URL": f"{keyrelay.url}/api/eachlabs", "PROXY_COOKIE": f"kr={TOKEN}"},
    )
    assert result["exit"] == 0 and result["ok"], (result["steps"], result["stderr"])
    steps = result["steps"]
    assert steps["image"]["output"] == {"kind": "image", "url": IMAGE}
    assert steps["edit"]["output"] == {"kind": "image", "url": IMAGE}
    assert steps["video"]["output"]["url"] == VIDEO

    image, edit, video = fake.created
    assert [(r.method, r.target) for r in upstream.requests] == [
        ("POST", "/v1/prediction"),
        *[("GET", f"/v1/prediction/{image}")] * 2,
        ("POST", "/api/v1/upload"),
        ("POST", "/v1/prediction"),
        *[("GET", f"/v1/prediction/{edit}")] * 2,
        ("POST", "/v1/prediction"),
        *[("GET", f"/v1/prediction/{video}")] * 2,
    ]
    creates = [r.json() for r in upstream.requests if r.target == "/v1/prediction"]
    assert [(c["model"], c["version"]) for c in creates] == [
        ("nano-banana-pro", "0.0.1"),
        ("nano-banana-pro-edit", "0.0.1"),
        ("kling-v2-6-pro-text-to-video", "0.0.1"),
    ]
    assert creates[0]["input"]["prompt"] == "a cat" and creates[1]["input"]["image_urls"] == [
        UPLOADED
    ]
    for r in upstream.requests:
        assert (r.host or "").split(":")[0] == HOST
        assert r.header_all("authorization") == [f"Bearer {TEST_KEYS['EACHLABS_API_KEY']}"]
        assert r.header("cookie") is None
