"""Forward auth's cache and its bound on calls to the app, against a real local HTTP app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from addon.auth.forward import ForwardAuth
from addon.config.auth import ForwardSpec


class SlowApp:
    """Answers every call after `delay` seconds with 200 (identity from the cookie); counts
    calls and the most at once."""

    def __init__(self, delay: float) -> None:
        self.calls: list[str] = []
        self.open = self.most_open = 0
        lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    app.calls.append(self.headers.get("x-original-uri", ""))
                    app.open += 1
                    app.most_open = max(app.most_open, app.open)
                time.sleep(delay)
                with lock:
                    app.open -= 1
                self.send_response(200)
                self.send_header("x-user", self.headers.get("cookie", ""))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slow_app() -> Iterator[SlowApp]:
    app = SlowApp(0.2)
    yield app
    app.server.shutdown()
    app.server.server_close()


def test_one_credential_with_junk_queries_is_one_call(slow_app: SlowApp) -> None:
    auth = ForwardAuth(ForwardSpec(slow_app.url, "x-user", cache=60))

    async def scenario() -> list[int]:
        first = await auth.check({"cookie": "s=alice"}, "POST", "/api/openai/x?junk=0", "openai")
        junk = [
            auth.check({"cookie": "s=alice"}, "POST", f"/api/openai/x?junk={i}", "openai")
            for i in range(1, 60)
        ]
        return [first.status, *[v.status for v in await asyncio.gather(*junk)]]

    assert asyncio.run(scenario()) == [200] * 60
    assert slow_app.calls == ["/api/openai/x?junk=0"]
    auth.stop()


def test_per_uri_and_per_provider(slow_app: SlowApp) -> None:
    per_uri = ForwardAuth(ForwardSpec(slow_app.url, "x-user", cache=60, per_uri=True))
    shared = ForwardAuth(ForwardSpec(slow_app.url, "x-user", cache=60))

    async def scenario() -> None:
        for uri in ("/a?x=1", "/a?x=2", "/a?x=1"):
            await per_uri.check({"cookie": "s=alice"}, "GET", uri, "openai")
        for provider in ("openai", "fal", "openai"):  # a yes for one is no yes for another
            await shared.check({"cookie": "s=alice"}, "GET", "/b", provider)

    asyncio.run(scenario())
    assert slow_app.calls == ["/a?x=1", "/a?x=2", "/b", "/b"]
    per_uri.stop()
    shared.stop()


def test_calls_to_the_app_are_bounded_and_an_overflow_fails_closed(slow_app: SlowApp) -> None:
    """60 new credentials at once: at most `concurrency` calls at the app; those that cannot get
    a slot within `timeout` are a 503, never an allow."""
    auth = ForwardAuth(ForwardSpec(slow_app.url, "x-user", cache=60, timeout=0.5, concurrency=3))

    async def scenario() -> list[int]:
        flood = [auth.check({"cookie": f"s=junk{i}"}, "GET", "/x", "openai") for i in range(60)]
        return [v.status for v in await asyncio.gather(*flood)]

    statuses = asyncio.run(scenario())
    assert slow_app.most_open == 3
    assert set(statuses) == {200, 503}
    assert 3 <= statuses.count(200) <= 12  # 0.5 s of slots at 0.2 s a call
    auth.stop()
