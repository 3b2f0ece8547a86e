"""@openai/agents-realtime, unmodified, in headless Chromium (driver: agents_realtime.mjs, page:
browser/agents_realtime.js): a RealtimeAgent's RealtimeSession over the SDK's WebSocket transport,
given only keyrelay's token as its apiKey, through the real mitmdump to the fake OpenAI Realtime
server (tests/support/realtime_upstream.py) under a budget. The books move by what the fake
billed, a budget that runs out ends the session in the browser (the error event, close 4402),
the key goes upstream and the token never does, nor does keyrelay print it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from conftest import KeyrelayFactory
from support import session_books
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.realtime_upstream import Rates, RealtimeUpstream, metered_socket
from support.tls import TlsMaterial

from clients.drivers import run_driver

ALICE = "alice-agents-realtime-token-5d2a"
KEY = TEST_KEYS["OPENAI_API_KEY"]
MODEL = "gpt-realtime"
CAP = 100  # every response's output cap
CONTEXT = 32000  # gpt-realtime's context window: one response's input at most
# No cache discount, so that a response costs near its worst case and a budget runs out fast.
FLAT = Rates(text_in=32, text_cached=32, audio_in=32, audio_cached=32, text_out=64, audio_out=64)


@pytest.fixture
def realtime(test_ca: TlsMaterial) -> Iterator[RealtimeUpstream]:
    with RealtimeUpstream(test_ca, FLAT) as server:
        yield server


@pytest.fixture
def page_port() -> int:
    """A free port for the page's origin, http://localhost:PORT (the driver serves it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Agent:
    """keyrelay with the configuration docs/realtime.md gives for a browser (the page's origin
    allowed), and the page's agent run against it."""

    def __init__(
        self,
        factory: KeyrelayFactory,
        upstream: RealtimeUpstream,
        node: str,
        chromium: str,
        page_port: int,
    ) -> None:
        self.factory, self.upstream = factory, upstream
        self.node, self.chromium, self.page_port = node, chromium, page_port

    def start(self, daily: float) -> KeyrelayProcess:
        provider = {
            "profile": "openai",
            "allow": ["browser", "realtime.socket"],
            "operations": {"realtime.socket": metered_socket(CONTEXT)},
            "prices": [self.upstream.rates.prices("gpt-realtime*")],
            "validation": {"models": ["gpt-realtime*"], "max_tokens": CAP},
        }
        doc = yaml.safe_load(session_books.rules("openai", provider, daily=daily, redis=None))
        doc["defaults"]["cors"] = {"origins": [f"http://localhost:{self.page_port}"]}
        return self.factory(
            yaml.safe_dump(doc, sort_keys=False),
            env={"KR_TOKENS": token_entry("alice", ALICE)},
            upstream_port=self.upstream.port,
        )

    def run(
        self, relay: KeyrelayProcess, turns: int, first: str = "hi", repeat: int = 1
    ) -> dict[str, Any]:
        """The page's agent says `first` (`repeat` times), then "hi", for `turns` turns."""
        query = {
            "url": f"ws://127.0.0.1:{relay.port}/api/openai/realtime?model={MODEL}",
            "token": ALICE,
            "first": first,
            "repeat": str(repeat),
            "turns": str(turns),
        }
        env = {
            "PAGE_PORT": str(self.page_port),
            "PAGE_QUERY": urlencode(query),
            "CHROMIUM": self.chromium,
        }
        result = run_driver(self.node, "agents_realtime.mjs", [], env, timeout=90)
        assert result["results"] is not None, (result.get("error"), result["stderr"])
        return result


@pytest.fixture
def agent(
    node: str,
    chromium: str,
    keyrelay_factory: KeyrelayFactory,
    realtime: RealtimeUpstream,
    page_port: int,
) -> Agent:
    return Agent(keyrelay_factory, realtime, node, chromium, page_port)


def spent(relay: KeyrelayProcess, until: float) -> dict[str, Any]:
    return session_books.spent(relay.port, ("Authorization", f"Bearer {ALICE}"), until)


def assert_key_upstream_only(relay: KeyrelayProcess, upstream: RealtimeUpstream) -> None:
    [(target, headers)] = upstream.handshakes
    assert target == f"/v1/realtime?model={MODEL}"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert ALICE not in json.dumps(headers)
    # The SDK's other subprotocols go on; the one carrying the token does not.
    assert headers["sec-websocket-protocol"].startswith("realtime, openai-agents-sdk.")
    output = relay.output()
    assert ALICE not in output and KEY not in output


def test_a_browser_agent_with_only_the_token_is_metered_by_what_the_fake_billed(
    agent: Agent, realtime: RealtimeUpstream, page_port: int
) -> None:
    relay = agent.start(daily=50.0)
    result = agent.run(relay, turns=2)
    page = result["results"]
    assert result["ok"], (result.get("error"), page, result["console"], result["page_errors"])
    assert page["origin"] == f"http://localhost:{page_port}"
    assert page["protocol"] == "realtime"  # the upstream's answer, as OpenAI's
    assert page["errors"] == [] and page["session_errors"] == []
    # The agent closed it at the end (`session.close()` sends no code: 1005), not keyrelay.
    assert page["close"]["code"] == 1005
    # The browser got each response, with the usage the fake billed it by.
    dones = [turn["done"] for turn in page["turns"]]
    assert [d["id"] for d in dones] == ["resp_1", "resp_2"]
    assert "session.created" in page["events"] and "response.output_text.delta" in page["events"]
    assert [FLAT.bill(d["usage"]) for d in dones] == pytest.approx(realtime.bills)
    # The SDK's own session.update (its agent, model and audio) went through, and every
    # response ran under the rules' cap (keyrelay's own update sets the session's).
    # keyrelay's own goes out on session.created, as the SDK's first may: either comes first.
    updates = [e["session"] for e in realtime.received if e["type"] == "session.update"]
    mine = {"type": "realtime", "max_output_tokens": CAP}
    assert updates.count(mine) == 1
    sdks = [u for u in updates if u != mine]
    assert [u.get("model") for u in sdks] == [MODEL, None]
    assert sdks[0]["instructions"] == "Greet the user in one word."
    creates = [e["response"] for e in realtime.received if e["type"] == "response.create"]
    assert creates == [{"max_output_tokens": CAP}] * 2
    books = spent(relay, until=realtime.billed)
    assert len(realtime.bills) == 2
    assert books["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert books["reserved"] == 0
    assert_key_upstream_only(relay, realtime)


def test_a_budget_that_runs_out_ends_the_browser_agents_session(
    agent: Agent, realtime: RealtimeUpstream
) -> None:
    worst = (CONTEXT * 32 + CAP * 64) / 1e6  # a response's whole context and cap, dearest rates
    first = (30000 * 32 + CAP * 64) / 1e6
    daily = 2.5  # room for two responses, not a third
    assert 2 * worst < daily < first + 2 * worst
    relay = agent.start(daily=daily)
    # The first turn says 30,000 characters, the next "hi": each response reads them all (within
    # the context), costing near its worst case.
    result = agent.run(relay, turns=3, first="x", repeat=30000)
    page = result["results"]
    assert page.get("error") is None, (page, result["console"], result["page_errors"])
    turns = page["turns"]
    assert [t["done"]["status"] for t in turns[:2]] == ["completed", "completed"]
    assert "done" not in turns[2]  # the third response was never made
    assert [e["code"] for e in page["errors"]] == ["budget-exhausted"]
    assert page["session_errors"] == ["budget-exhausted"]  # the app's session.on("error")
    assert page["close"]["code"] == 4402
    assert session_books.closes(realtime) == [4402]  # the upstream's session ends too
    assert len(realtime.bills) == 2
    assert [e["type"] for e in realtime.received].count("response.create") == 2
    books = spent(relay, until=realtime.billed)
    assert books["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert books["spent"] <= daily and books["reserved"] == 0
    assert_key_upstream_only(relay, realtime)
