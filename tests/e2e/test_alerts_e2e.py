"""Spend alerts through the real mitmdump: a fake Anthropic that bills each call its whole
`max_tokens`, a loopback webhook receiver that checks every signature, and a real
redis-server shared by two instances. The webhook's own thread is also driven in-process
against the receiver (its queue and its flush at close)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from support.client import HttpClient
from support.guard import token_entry
from support.proxy import KeyrelayProcess
from support.redis_server import RedisServer
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer
from support.webhook import Delivery, WebhookReceiver

from addon.budget.alerts import alert_key
from addon.budget.alerts_webhook import Webhook
from addon.budget.books import periods
from addon.config.alerts import WebhookSpec
from addon.config.secret_ref import SecretRef

ALICE, BOB = "alice-token-71c2", "bob-token-0e9d"
SECRET = "alert-secret-5f2a9c41"
ENV = {
    "KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)]),
    "KR_ALERT_SECRET": SECRET,
}
PRICE = 0.001  # USD per output token; input is free, so a call costs max_tokens x PRICE


def rules(hook: WebhookReceiver, *, redis: str | None = None, timeout: int = 2) -> str:
    doc: dict[str, Any] = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        "budget": {
            "daily": 0.10,
            "alerts": {
                "thresholds": [50, 80, 100],
                "rate": {"times": 5, "window": 300, "min_spend": 0.05},
                "webhook": {
                    "url": hook.url,
                    "secret": {"env": "KR_ALERT_SECRET"},
                    "timeout": timeout,
                    "retries": 3,
                },
            },
        },
        "providers": {
            "anthropic": {
                "match": {"prefix": "/api/anthropic"},
                "upstream": "https://api.anthropic.com",
                "credential": {"header": "x-api-key", "key": {"env": "ANTHROPIC_API_KEY"}},
                "prices": [{"model": "*", "input": 0.0, "output": PRICE * 1e6}],
            }
        },
    }
    if redis:
        doc["limits_backend"] = {"redis": redis}
    return yaml.safe_dump(doc, sort_keys=False)


def bills_its_cap(req: RecordedRequest, w: ResponseWriter) -> None:
    """Anthropic's answer, using every token the request allowed."""
    body = req.json()
    usage = {"input_tokens": 3, "output_tokens": body["max_tokens"]}
    w.send_json({"id": "msg_1", "type": "message", "model": body["model"], "usage": usage})


@pytest.fixture
def billing(upstream: UpstreamServer) -> UpstreamServer:
    upstream.route("POST", "/v1/messages", bills_its_cap, host="api.anthropic.com")
    return upstream


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


def spend(proc: KeyrelayProcess, token: str, tokens: int) -> int:
    """One call costing `tokens` x PRICE; its status once its charge is in the books."""
    headers = [("Authorization", f"Bearer {token}")]
    body = {
        "model": "claude-x",
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with HttpClient(proc.port) as client:
        status = client.post("/api/anthropic/v1/messages", json=body, headers=headers).status
        deadline = time.monotonic() + 10
        while client.get("/_keyrelay/usage", headers).json()["reserved"]:
            assert time.monotonic() < deadline, "the charge did not settle"
            time.sleep(0.02)
    return status


def key(identity: str, which: str) -> str:
    daily = periods(datetime.now(UTC))[0]
    return alert_key(identity, daily.ident, which, None)


def logged(proc: KeyrelayProcess, alerts: int) -> str:
    """proc's output once it has logged `alerts` alerts: a log line may reach the output after
    the webhook has its POST (mitmproxy prints log entries from its event loop, later)."""
    proc.wait_for_output(f"(?s)(?:keyrelay: alert:.*?){{{alerts}}}", timeout=10)
    return proc.output()


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.json()["id"] for d in deliveries]


ALICE_ALERTS = [key("token:alice", w) for w in ("t50", "rate", "t80", "t100")]
BOB_ALERTS = [key("token:bob", w) for w in ("t50", "rate")]


def test_each_threshold_reaches_the_webhook_once_signed_and_retried(
    keyrelay_factory, billing, hook
) -> None:
    hook.fail_next = 2  # the first alert is taken at its third attempt
    proc = keyrelay_factory(rules(hook), env=ENV)
    assert spend(proc, ALICE, 50) == 200  # 50%, and $0.05 in the window, none before: fast
    assert ids(hook.wait_for(2)) == ALICE_ALERTS[:2]
    assert spend(proc, ALICE, 10) == 200  # 60%: nothing new
    assert spend(proc, ALICE, 20) == 200  # 80%
    assert ids(hook.wait_for(3))[2:] == ALICE_ALERTS[2:3]
    assert spend(proc, ALICE, 20) == 200  # 100%
    assert spend(proc, ALICE, 1) == 429  # nothing left
    # Bob's alerts come after anything Alice's last charge could have raised again.
    assert spend(proc, BOB, 50) == 200
    delivered = hook.wait_for(6)
    assert ids(delivered) == ALICE_ALERTS + BOB_ALERTS
    assert all(d.signed for d in delivered)
    assert all(d.headers["x-keyrelay-alert"] == d.json()["id"] for d in delivered)
    # The first was retried after two 500s, with the same body and id each time.
    first = [a for a in hook.attempts if a.json()["id"] == ALICE_ALERTS[0]]
    assert len(first) == 3 and len({a.body for a in first}) == 1
    t80 = delivered[2].json()
    assert t80["type"] == "budget-threshold" and t80["identity"] == "token:alice"
    assert (t80["threshold"], t80["budget"], t80["spent"], t80["period"]) == (
        80,
        0.1,
        0.08,
        "daily",
    )
    assert t80["provider"] is None
    rate = delivered[1].json()
    assert rate["type"] == "spend-rate" and rate["window_spent"] == 0.05
    assert rate["hour_before_spent"] == 0 and rate["times"] == 5
    # Each is logged once, the identity quoted; the secret nowhere.
    out = logged(proc, 6)
    assert out.count("keyrelay: alert: budget-threshold") == 4
    assert out.count("keyrelay: alert: spend-rate") == 2
    assert '"token:alice" reached 80% of its daily budget ($0.080000 of $0.100000)' in out
    assert "the webhook failed (status 500); retrying" in out
    assert SECRET not in out and hook.url not in out


def test_a_hanging_webhook_never_delays_a_request(keyrelay_factory, billing, hook) -> None:
    hook.hang_next = 1
    proc = keyrelay_factory(rules(hook, timeout=60), env=ENV)
    assert spend(proc, ALICE, 50) == 200  # its alerts: the first POST hangs
    assert hook.hanging.wait(20)
    assert spend(proc, ALICE, 30) == 200  # 80%: queued behind the hanging POST
    assert spend(proc, BOB, 10) == 200
    # Every request was answered while the webhook still holds the first alert.
    assert hook.hanging.is_set() and not hook.release.is_set() and not hook.attempts
    hook.release.set()
    assert ids(hook.wait_for(3)) == ALICE_ALERTS[:3]


def test_once_per_period_across_two_instances_sharing_redis(
    keyrelay_factory, billing, hook
) -> None:
    with RedisServer() as redis:
        text = rules(hook, redis=redis.url)
        a = keyrelay_factory(text, env=ENV)
        b = keyrelay_factory(text, env=ENV)
        assert spend(a, ALICE, 50) == 200  # a raises 50% and the pace alarm
        assert ids(hook.wait_for(2)) == ALICE_ALERTS[:2]
        assert spend(b, ALICE, 10) == 200  # b sees 60% (and its own pace): both raised already
        assert spend(a, ALICE, 20) == 200  # 80%
        assert spend(b, ALICE, 20) == 200  # 100%, raised by b
        assert spend(a, ALICE, 1) == 429
        assert spend(a, BOB, 50) == 200
        delivered = hook.wait_for(6)
        assert ids(delivered) == ALICE_ALERTS + BOB_ALERTS
        assert all(d.signed for d in delivered)
        counts = [logged(p, n).count("keyrelay: alert:") for p, n in ((a, 5), (b, 1))]
        assert counts == [5, 1]  # b raised only the 100% it saw first


def test_an_alert_raised_by_the_last_request_is_posted_at_sigterm(
    keyrelay_factory, billing, hook
) -> None:
    """The webhook holds the first POST, so the last request's alert is still queued when
    SIGTERM comes: the shutdown gives each queued alert one attempt before the process exits."""
    hook.hang_next = 1
    # Its timeout outlasts the steps to the close (the held POST must still be held then).
    proc = keyrelay_factory(rules(hook, timeout=5), env=ENV)
    assert spend(proc, ALICE, 50) == 200  # 50% and the pace alarm: the first POST hangs
    assert hook.hanging.wait(20)
    assert spend(proc, ALICE, 30) == 200  # 80%: the last request's alert, queued
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.stop(timeout=20) == 0
    # The held one timed out (one attempt, no retry at close); the queued two were posted.
    assert ids(hook.deliveries) == [ALICE_ALERTS[1], ALICE_ALERTS[2]]
    assert all(d.signed for d in hook.deliveries)
    out = proc.output()
    assert f"the webhook did not take {ALICE_ALERTS[0]} after 1 attempt(s)" in out
    assert "not posted" not in out
    assert SECRET not in out and hook.url not in out


# -- the webhook's thread, in-process against the receiver ---------------------------------------


def webhook(hook: WebhookReceiver, timeout: int, queue: int = 1000) -> Webhook:
    return Webhook(WebhookSpec(hook.url, SecretRef(env="X"), timeout=timeout, queue=queue), SECRET)


def held(hook: WebhookReceiver, sender: Webhook, *names: str) -> None:
    """Post `names`: the receiver holds the first, so the others wait in the queue."""
    hook.hang_next = 1
    assert sender.post(names[0], {"id": names[0]})
    assert hook.hanging.wait(20)
    for name in names[1:]:
        assert sender.post(name, {"id": name})


def test_a_full_webhook_queue_drops_and_logs(hook, caplog: pytest.LogCaptureFixture) -> None:
    sender = webhook(hook, timeout=10, queue=2)
    held(hook, sender, "a", "b", "c")  # a is being posted; b and c fill the queue
    assert not sender.post("d", {"id": "d"})
    assert "the webhook queue is full (2 waiting); dropped d" in caplog.text
    hook.release.set()
    assert ids(hook.wait_for(3)) == ["a", "b", "c"]
    sender.stop()
    sender.join()


def test_alerts_queued_at_close_are_posted_once_each_signed(
    hook, caplog: pytest.LogCaptureFixture
) -> None:
    sender = webhook(hook, timeout=10)
    held(hook, sender, "a", "b", "c")
    sender.stop()
    assert not sender.post("d", {"id": "d"})  # closing: no new ones
    hook.release.set()
    sender.join()
    assert ids(hook.attempts) == ["a", "b", "c"]
    assert ids(hook.deliveries) == ["a", "b", "c"] and all(d.signed for d in hook.deliveries)
    assert all(d.headers["x-keyrelay-alert"] == d.json()["id"] for d in hook.deliveries)
    assert "not posted" not in caplog.text


def test_a_failing_webhook_gets_one_attempt_per_alert_at_close(
    hook, caplog: pytest.LogCaptureFixture
) -> None:
    sender = webhook(hook, timeout=10)  # three retries each, were it not closing
    held(hook, sender, "a", "b", "c")
    hook.fail_next = 10
    sender.stop()
    hook.release.set()
    sender.join()
    assert ids(hook.attempts) == ["a", "b", "c"] and not hook.deliveries
    for name in "abc":
        assert f"the webhook did not take {name} after 1 attempt(s): status 500" in caplog.text
    assert "retrying" not in caplog.text and "not posted" not in caplog.text


def test_a_hanging_webhook_holds_the_close_for_twice_its_timeout_at_most(
    hook, caplog: pytest.LogCaptureFixture
) -> None:
    sender = webhook(hook, timeout=1)
    held(hook, sender, "a", "b", "c")
    hook.hang_next = 10  # and every POST after it
    started = time.monotonic()
    sender.stop()
    sender.join()
    # At most the attempt under way and then 1 s; generous, as the retries of one alert alone
    # would pause 1 + 2 + 4 s.
    assert time.monotonic() - started < 6
    assert not hook.deliveries
    # What was queued (and, had its attempt not ended yet, the one being posted) is reported.
    unposted = r"(\d+) alert\(s\) not posted in the time given at closing: (.*)"
    found = re.search(unposted, caplog.text)
    assert found is not None, caplog.text
    named = found[2].split(", ")
    assert int(found[1]) == len(named) and "c" in named
    assert named in (["b", "c"], ["a", "b", "c"])
    assert SECRET not in caplog.text and hook.url not in caplog.text
