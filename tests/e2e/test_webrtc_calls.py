"""WebRTC calls brokered by keyrelay, through the real mitmdump, at the HTTP and WebSocket level
(no media: the fake answers SDP and plays the browser's side of the call). The offer goes as
the `openai` SDK's `realtime.calls.create` sends it, with keyrelay's token; keyrelay answers
with OpenAI's SDP answer, opens the call's sideband itself with the key, meters the responses
from it, and hangs the call up when the budget, the rules or the time cap say so."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from conftest import KeyrelayFactory
from openai import OpenAI
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.realtime_upstream import ANSWER, Rates, RealtimeUpstream
from support.tls import TlsMaterial

ALICE = "alice-webrtc-token-9d2c"
BOB = "bob-webrtc-token-41e7"
KEY = TEST_KEYS["OPENAI_API_KEY"]
MODEL = "gpt-realtime"
CONTEXT = 32000  # input tokens one response may be billed (gpt-realtime's context window)
OUTPUT = 4096  # a call's responses are reserved at OpenAI's most: the browser sets its own cap
# No cache discount, so that responses cost near their worst case and a budget runs out fast.
FLAT = Rates(text_in=32, text_cached=32, audio_in=32, audio_cached=32, text_out=64, audio_out=64)
OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
)
SESSION = {"type": "realtime", "model": MODEL}


def rules(rates: Rates, *, daily: float, seconds: int = 300) -> str:
    provider = {
        "profile": "openai",
        "allow": ["browser", "realtime.calls", "realtime.socket"],
        "operations": {
            "realtime.calls": {
                "op": "POST api.openai.com/v1/realtime/calls",
                "kind": "call",
                "meter": "session",
                "reserve": CONTEXT,
                "creates": "call",
            }
        },
        "prices": [rates.prices("gpt-realtime*")],
        "validation": {"models": ["gpt-realtime*"], "max_credential_seconds": seconds},
    }
    doc = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        "budget": {"daily": daily},
        "providers": {"openai": provider},
    }
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def realtime(test_ca: TlsMaterial, keyrelay_factory: KeyrelayFactory) -> Iterator[RealtimeUpstream]:
    with RealtimeUpstream(test_ca, FLAT) as server:
        yield server
        # keyrelay first: its idle connections to the fake would hold the fake's threads 5 s.
        keyrelay_factory.stop_all()


def start(
    factory: KeyrelayFactory,
    upstream: RealtimeUpstream,
    daily: float = 50.0,
    seconds: int = 300,
    drain: int = 30,
) -> KeyrelayProcess:
    return factory(
        rules(upstream.rates, daily=daily, seconds=seconds),
        env={"KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)])},
        upstream_port=upstream.port,
        extra_args=["--set", f"keyrelay_drain_timeout={drain}"],
    )


def client(relay: KeyrelayProcess) -> OpenAI:
    return OpenAI(api_key=ALICE, base_url=f"http://127.0.0.1:{relay.port}/api/openai")


def place(relay: KeyrelayProcess, upstream: RealtimeUpstream, **given: Any) -> str:
    """A call placed as the `openai` SDK places one; its id, once its sideband is open."""
    answer = client(relay).realtime.calls.with_raw_response.create(sdp=OFFER, **given)
    assert answer.status_code == 201
    assert answer.content.decode() == ANSWER
    call_id = answer.headers["location"].rpartition("/")[2]
    assert call_id.startswith("rtc_")
    assert KEY not in json.dumps(dict(answer.headers))
    assert upstream.attached(call_id)
    return call_id


def books(relay: KeyrelayProcess) -> dict[str, Any]:
    reply = HttpClient(relay.port).get("/_keyrelay/usage", [("Authorization", f"Bearer {ALICE}")])
    return reply.json()


def settled(relay: KeyrelayProcess, upstream: RealtimeUpstream, call_id: str) -> dict[str, Any]:
    """The books once every response billed so far is settled and keyrelay has either reserved
    the next response or hung the call up (a sideband's events land just after they are sent)."""
    figures: dict[str, Any] = {}
    for _ in range(200):
        figures = books(relay)
        hung_up = any(c == call_id for c, _ in upstream.hangups)
        if figures["spent"] >= upstream.billed - 1e-9 and (figures["reserved"] > 0 or hung_up):
            return figures
        time.sleep(0.05)
    return figures


def ended(relay: KeyrelayProcess, upstream: RealtimeUpstream) -> dict[str, Any]:
    """The books once the call's session has let go of every reservation."""
    figures: dict[str, Any] = {}
    for _ in range(200):
        figures = books(relay)
        if figures["reserved"] == 0 and figures["spent"] >= upstream.billed - 1e-9:
            return figures
        time.sleep(0.05)
    return figures


def hung_up(upstream: RealtimeUpstream, call_id: str) -> list[dict[str, str]]:
    """The hangups the upstream recorded for the call (waited for, a few seconds at most)."""
    for _ in range(200):
        if found := [h for c, h in upstream.hangups if c == call_id]:
            return found
        time.sleep(0.05)
    return []


def test_a_call_is_brokered_and_metered_from_its_sideband(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime)
    call_id = place(relay, realtime, session=SESSION)
    assert realtime.respond(call_id, "What is the capital of France?")
    assert settled(relay, realtime, call_id)["reserved"] > 0
    assert realtime.respond(call_id, "And of Spain?")
    assert settled(relay, realtime, call_id)["reserved"] > 0
    realtime.leave(call_id)  # the browser hangs up
    day = ended(relay, realtime)
    assert len(realtime.bills) == 2
    assert day["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert day["reserved"] == 0
    # The offer went with the key, as the SDK sent it (multipart: the SDP and the session).
    [offer] = realtime.offers
    assert offer.headers["authorization"] == f"Bearer {KEY}"
    assert offer.headers["content-type"].startswith("multipart/form-data")
    assert ALICE not in json.dumps(offer.headers) and ALICE.encode() not in offer.body
    # keyrelay's own sideband to the call, with the key.
    [(target, headers)] = realtime.handshakes
    assert target == f"/v1/realtime?call_id={call_id}"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in relay.output() and ALICE not in relay.output()


def test_only_the_caller_who_placed_a_call_may_join_its_sideband(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    """A call's id is in its answer's Location: Bob, knowing Alice's, cannot join her call's
    sideband (and listen to it, or steer it) through keyrelay, in any spelling of the id."""
    relay = start(keyrelay_factory, realtime)
    call_id = place(relay, realtime, session=SESSION)
    with HttpClient(relay.port) as http:
        for spelt in (call_id, call_id.upper(), call_id.replace("_", "%5F")):
            joined = http.get(
                f"/api/openai/realtime?model={MODEL}&call_id={spelt}",
                [("Authorization", f"Bearer {BOB}")],
            )
            assert joined.status == 404, joined.body
            assert joined.json()["type"].endswith("unknown-job")
    assert [target for target, _ in realtime.handshakes] == [f"/v1/realtime?call_id={call_id}"]
    realtime.leave(call_id)


def test_an_offer_alone_names_its_model_in_the_url(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime)
    call_id = place(relay, realtime, extra_query={"model": MODEL})
    [offer] = realtime.offers
    assert offer.headers["content-type"] == "application/sdp"
    assert offer.body == OFFER.encode()
    assert realtime.respond(call_id, "Hello")
    realtime.leave(call_id)
    assert ended(relay, realtime)["spent"] == pytest.approx(realtime.billed, abs=1e-8)


@pytest.mark.parametrize(
    ("given", "code"),
    [
        (
            {"session": {"type": "realtime", "model": "gpt-4o-realtime-preview"}},
            "model-not-allowed",
        ),
        ({}, "model-required"),  # the offer alone, no ?model=: the rules cannot be checked
        ({"extra_query": {"model": "gpt-4o-realtime-preview"}}, "model-not-allowed"),
    ],
)
def test_an_offer_the_rules_refuse_never_reaches_the_provider(
    keyrelay_factory: KeyrelayFactory,
    realtime: RealtimeUpstream,
    given: dict[str, Any],
    code: str,
) -> None:
    relay = start(keyrelay_factory, realtime)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(relay).realtime.calls.create(sdp=OFFER, **given)
    assert refused.value.response.json()["type"].endswith(code)
    assert realtime.offers == []
    assert books(relay)["reserved"] == 0


def test_a_budget_that_runs_out_hangs_the_call_up_within_one_response(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    worst = (CONTEXT * 32 + OUTPUT * 64) / 1e6  # one response's: its context and its cap
    daily = 3.0
    assert 2 * worst < daily
    relay = start(keyrelay_factory, realtime, daily=daily)
    call_id = place(relay, realtime, session=SESSION)
    turns = 0
    while realtime.respond(call_id, "x" * 3000):  # each turn costs more: the context grows
        turns += 1
        day = settled(relay, realtime, call_id)
        assert turns < 20, day
    [hangup] = hung_up(realtime, call_id)
    assert hangup["authorization"] == f"Bearer {KEY}"
    assert "hung up: budget-exhausted" in relay.output()
    assert turns >= 2
    assert len(realtime.bills) == turns  # nothing was made once the call was hung up
    day = ended(relay, realtime)
    assert day["spent"] == pytest.approx(realtime.billed, abs=1e-8)
    assert day["spent"] <= daily and day["reserved"] == 0
    # It ended because one more response could not be covered, not sooner.
    assert day["spent"] + worst > daily
    assert realtime.billed - realtime.bills[-1] + worst <= daily


def test_a_model_the_rules_refuse_hangs_the_call_up(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime)
    call_id = place(relay, realtime, session=SESSION)
    realtime.update(call_id, model="gpt-4o-realtime-preview")  # over the browser's data channel
    assert hung_up(realtime, call_id)
    assert "hung up: model-not-allowed" in relay.output()
    assert not realtime.respond(call_id, "Hello")
    assert ended(relay, realtime)["spent"] == 0


def test_a_call_is_hung_up_at_its_time_cap(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime, seconds=1)
    call_id = place(relay, realtime, session=SESSION)
    assert hung_up(realtime, call_id)
    assert "hung up: time-cap" in relay.output()
    assert ended(relay, realtime)["reserved"] == 0


def exited(relay: KeyrelayProcess, seconds: float = 10) -> int | None:
    """The exit code once the process has ended by itself (stop() would signal it again)."""
    deadline = time.monotonic() + seconds
    while relay.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return relay.returncode


def test_a_drain_lets_a_call_go_on_until_its_deadline_then_hangs_it_up(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime, drain=6)  # room for the checks before it ends
    call_id = place(relay, realtime, session=SESSION)
    assert relay.pid is not None
    os.kill(relay.pid, signal.SIGTERM)
    relay.wait_for_output("draining: 1 in flight")
    assert realtime.respond(call_id, "still talking")  # the call goes on
    assert not [h for c, h in realtime.hangups if c == call_id]
    assert hung_up(realtime, call_id)  # at the drain's deadline: no longer metered after it
    assert "hung up: shutdown" in relay.output()
    assert exited(relay) == 0


def test_a_call_that_ends_during_a_drain_lets_the_process_exit(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime)  # a drain of 30 s
    call_id = place(relay, realtime, session=SESSION)
    assert relay.pid is not None
    os.kill(relay.pid, signal.SIGTERM)
    relay.wait_for_output("draining: 1 in flight")
    assert relay.alive()  # waiting for the call
    realtime.leave(call_id)  # the browser hangs up
    assert exited(relay) == 0  # well before the drain's 30 s
    assert "hung up: shutdown" not in relay.output()  # it ended as calls do, not cut by keyrelay


def test_shutdown_hangs_every_call_up(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    relay = start(keyrelay_factory, realtime, drain=0)
    call_id = place(relay, realtime, session=SESSION)
    assert relay.stop() == 0
    assert hung_up(realtime, call_id)  # keyrelay would no longer meter it
    assert "hung up: shutdown" in relay.output()


def test_a_call_whose_sideband_cannot_be_opened_is_hung_up(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    realtime.sideband_refused = 403
    relay = start(keyrelay_factory, realtime)
    answer = client(relay).realtime.calls.with_raw_response.create(sdp=OFFER, session=SESSION)
    call_id = answer.headers["location"].rpartition("/")[2]
    assert hung_up(realtime, call_id)  # keyrelay could not meter it: it does not go on
    assert "hung up: sideband-ended" in relay.output()
    assert ended(relay, realtime)["reserved"] == 0  # the offer's reservation released


def test_a_call_answered_without_its_id_is_not_passed_on(
    keyrelay_factory: KeyrelayFactory, realtime: RealtimeUpstream
) -> None:
    # Without the id keyrelay can neither meter the call nor hang it up: the browser must not
    # get the SDP answer it would connect with.
    realtime.no_location = True
    relay = start(keyrelay_factory, realtime)
    with pytest.raises(openai.APIStatusError) as refused:
        client(relay).with_options(max_retries=0).realtime.calls.create(sdp=OFFER, session=SESSION)
    assert refused.value.status_code == 502
    assert refused.value.response.json()["type"].endswith("/call-not-metered")
    assert ANSWER not in refused.value.response.text
    assert len(realtime.offers) == 1 and not realtime.handshakes
    assert ended(relay, realtime) == {**ended(relay, realtime), "spent": 0, "reserved": 0}
    assert "a call was answered without its id: refused" in relay.output()
