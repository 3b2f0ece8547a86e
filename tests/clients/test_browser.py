"""A real browser (Debian's headless Chromium, driven by playwright-core) on another origin calls
keyrelay with fetch (as the Anthropic SDK in the CE.SDK plugin does) and with the browser build
of @fal-ai/client. CORS lets an allowed origin through and stops a disallowed one."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from support import cors
from support.proxy import KeyrelayProcess
from support.upstream import UpstreamServer

from clients.drivers import run_driver
from clients.provider_fakes import ANTHROPIC_DELTAS, FLUX_RESULT, anthropic_messages, install_fal

STEPS = "anthropic,fal,fal_stream,fal_upload"


@pytest.fixture
def browser_relay(
    keyrelay_factory: Callable[..., KeyrelayProcess], page_server: int
) -> KeyrelayProcess:
    """keyrelay allowing the page's origin http://localhost:PORT, exactly as the README says."""
    return keyrelay_factory(cors.allowing(f"http://localhost:{page_server}"))


def open_page(
    node: str, chromium: str, host: str, port: int, relay: KeyrelayProcess, steps: str = STEPS
) -> Any:
    query = urlencode({"proxy": relay.url, "steps": steps})
    return run_driver(
        node,
        "browser.mjs",
        [],
        {"PAGE_URL": f"http://{host}:{port}/index.html?{query}", "CHROMIUM": chromium},
        timeout=90,
    )


@pytest.fixture
def fakes(upstream: UpstreamServer, upload_server: UpstreamServer) -> UpstreamServer:
    upstream.route("POST", "/v1/messages", anthropic_messages(), host="api.anthropic.com")
    install_fal(upstream, upload_server.url)
    return upstream


def test_allowed_origin(
    node: str,
    chromium: str,
    page_server: int,
    browser_relay: KeyrelayProcess,
    fakes: UpstreamServer,
    upload_server: UpstreamServer,
) -> None:
    result = open_page(node, chromium, "localhost", page_server, browser_relay)
    page = result["results"] or {}
    steps = page.get("steps", {})
    assert result["ok"], (result.get("error"), steps, result["console"])
    assert page["origin"] == f"http://localhost:{page_server}"

    anthropic = steps["anthropic"]
    assert anthropic["status"] == 200 and anthropic["content_type"].startswith("text/event-stream")
    assert anthropic["text"] == "".join(ANTHROPIC_DELTAS)
    assert anthropic["events"][-1] == "message_stop"
    assert anthropic["request_id"] == "req_01KeyrelayFake"  # readable: Expose-Headers

    assert steps["fal"]["statuses"][-1] == "COMPLETED" and steps["fal"]["data"] == FLUX_RESULT
    assert steps["fal"]["request_id"]  # x-fal-request-id, exposed to the page
    assert steps["fal_stream"]["events"][-1] == "COMPLETED"
    assert steps["fal_upload"]["file_url"].startswith("https://v3.fal.media/files/")
    put = [r for r in upload_server.requests if r.method == "PUT"]
    assert [r.body for r in put] == [bytes((i * 7 + 3) % 256 for i in range(4096))]

    # Preflights never reached the upstream, and the browser's context did not either.
    assert all(r.method != "OPTIONS" for r in fakes.requests)
    assert all(r.header("origin") is None for r in fakes.requests)


def test_disallowed_origin(
    node: str,
    chromium: str,
    page_server: int,
    browser_relay: KeyrelayProcess,
    fakes: UpstreamServer,
) -> None:
    # Same page and server, but 127.0.0.1 is another origin than the allowed localhost.
    result = open_page(node, chromium, "127.0.0.1", page_server, browser_relay)
    assert result["ok"] is False
    steps = result["results"]["steps"]
    for name in STEPS.split(","):
        assert steps[name]["ok"] is False, steps[name]
    assert steps["anthropic"]["error"]["message"] == "Failed to fetch"
    assert any("CORS" in line for line in result["console"]), result["console"]
    assert fakes.requests == []  # stopped at the preflight: nothing was spent


def test_allowed_origin_reads_the_problem_when_the_upstream_is_down(
    node: str,
    chromium: str,
    page_server: int,
    keyrelay_factory: Callable[..., KeyrelayProcess],
) -> None:
    """Not "Failed to fetch" (what a CORS error looks like): the page reads keyrelay's 502."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    relay = keyrelay_factory(cors.allowing(f"http://localhost:{page_server}"), upstream_port=closed)
    result = open_page(node, chromium, "localhost", page_server, relay, steps="anthropic")
    anthropic = result["results"]["steps"]["anthropic"]
    assert anthropic["status"] == 502, (anthropic, result["console"])
    assert anthropic["content_type"] == "application/json"
    problem = json.loads(anthropic["body"])
    assert problem["type"].endswith("/upstream-unavailable")
    assert "anthropic" in problem["detail"]
