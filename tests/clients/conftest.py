"""Fixtures for the real-client conformance suite (tests/conftest.py's fixtures apply here too).

Node, the npm packages and Chromium are installed by scripts/_setup_clients.sh; when one is
missing these fixtures fail the test with that instruction. They never skip.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.upstream import UpstreamServer

from clients.drivers import CLIENTS
from clients.provider_fakes import install_upload_server

SETUP = "scripts/_setup_clients.sh"
NODE_MODULES = (
    "@fal-ai/client",
    "@google/genai",
    "@inferencesh/sdk",
    "@openai/agents-realtime",
    "playwright-core",
    "esbuild",
)
# Installed apart, in tests/clients/cesdk: the CE.SDK editor and its AI plugins.
CESDK_PLUGINS = (
    "@cesdk/cesdk-js",
    "@imgly/plugin-ai-image-generation-web",
    "@imgly/plugin-ai-video-generation-web",
    "@imgly/plugin-ai-audio-generation-web",
    "@imgly/plugin-ai-text-generation-web",
)


@pytest.fixture(scope="session")
def upload_server_session() -> Iterator[UpstreamServer]:
    """Plain HTTP on 127.0.0.1: where signed upload URLs point (the bytes skip keyrelay)."""
    with UpstreamServer(None) as server:
        yield server


@pytest.fixture
def upload_server(upload_server_session: UpstreamServer) -> Iterator[UpstreamServer]:
    upload_server_session.reset()
    install_upload_server(upload_server_session)
    yield upload_server_session
    errors = upload_server_session.errors
    upload_server_session.reset()
    if errors:
        pytest.fail("upload server errors:\n" + "\n".join(errors), pytrace=False)


def _require(ok: bool, what: str) -> None:
    if not ok:
        pytest.fail(f"{what}: run {SETUP} (scripts/test does)", pytrace=False)


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    _require(path is not None, "node is not installed")
    for module in NODE_MODULES:
        _require(
            (CLIENTS / "node_modules" / module / "package.json").is_file(),
            f"the node module {module} is missing in {CLIENTS}/node_modules",
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def cesdk_plugins(node: str) -> str:
    """Node, with the CE.SDK editor and its AI plugins in tests/clients/cesdk/node_modules."""
    for module in CESDK_PLUGINS:
        _require(
            (CLIENTS / "cesdk" / "node_modules" / module / "package.json").is_file(),
            f"the node module {module} is missing in {CLIENTS}/cesdk/node_modules",
        )
    return node


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("KEYRELAY_CHROMIUM", "/usr/bin/chromium")
    _require(os.access(path, os.X_OK), f"chromium is not installed at {path}")
    _require((CLIENTS / "browser" / "fal-client.js").is_file(), "the fal browser bundle is missing")
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_server() -> Iterator[int]:
    """Serves tests/clients/browser/ on 127.0.0.1 (its own origin); yields the port."""
    handler = functools.partial(_Quiet, directory=str(CLIENTS / "browser"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
