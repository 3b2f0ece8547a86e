"""Runware through the real mitmdump, with a fake Runware that bills as Runware does (support/
runware.py): the arrays of tasks the CE.SDK plugins' Runware client sends, the server's key
injected and a client's authentication task never forwarded, a task polled only by its submitter
and its UUID not taken by another, and each task charged what Runware says it cost, with the
figure taken out of answers whose client did not ask for it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.access_log import log_lines
from support.client import HttpClient, Reply
from support.guard import token_entry
from support.proxy import TEST_KEYS
from support.runware import COSTS, HOST, IMAGE, FakeRunware
from support.upstream import UpstreamServer

ALICE, BOB = "alice-token-5c1e", "bob-token-0d7a"
ENV = {"KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)])}
UNIT = 0.08  # USD: the most one bfl:5@1 image may cost (its reservation per result)


def submit_task(task_uuid: str, **fields: Any) -> dict[str, Any]:
    """What the plugins' client submits (createRunwareClient, image 1.69, Flux2Pro)."""
    return {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "model": "bfl:5@1",
        "positivePrompt": "a cat",
        "deliveryMethod": "async",
        "outputType": "URL",
        "outputFormat": "PNG",
        "numberResults": 1,
        **fields,
    }


def poll_task(task_uuid: str) -> dict[str, Any]:
    return {"taskType": "getResponse", "taskUUID": task_uuid}


@pytest.fixture
def fake(upstream: UpstreamServer) -> FakeRunware:
    return FakeRunware().install(upstream)


def start(factory: Any, tmp_path: Path, **top: Any) -> tuple[HttpClient, Path]:
    doc = {
        "defaults": {
            "auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}, "cookie": "kr_session"}
        },
        "providers": {
            "runware": {"profile": "runware", "prices": [{"model": "bfl:*", "unit": UNIT}]}
        },
        **top,
    }
    log = tmp_path / "access.log"
    args = ["--set", "keyrelay_access_log=json", "--set", f"keyrelay_access_log_file={log}"]
    proc = factory(yaml.safe_dump(doc), env=ENV, extra_args=args)
    return HttpClient(proc.port), log


def plugin(client: HttpClient, token: str, *tasks: Any) -> Reply:
    """As the plugins' client sends it: POST to the proxy URL itself, JSON, and no header of its
    own (its providers never hand their `headers` on): the app's session is a cookie."""
    headers = [("Cookie", f"kr_session={token}"), ("Content-Type", "application/json")]
    return client.request("POST", "/api/runware", json.dumps(list(tasks)).encode(), headers)


def until_done(client: HttpClient, token: str, task_uuid: str) -> dict[str, Any]:
    for _ in range(5):
        answer = plugin(client, token, poll_task(task_uuid))
        assert answer.status == 200, answer.body
        items = answer.json()["data"]
        if items and items[0].get("status") == "success":
            return answer.json()
    raise AssertionError("never done")


def test_the_plugins_tasks_with_the_key_injected_and_tasks_their_submitters(
    keyrelay_factory: Any, upstream: UpstreamServer, fake: FakeRunware, tmp_path: Path
) -> None:
    client, log = start(keyrelay_factory, tmp_path)
    task = str(uuid.uuid4())
    # A key of the client's own, as an authentication task, never goes upstream.
    auth = {"taskType": "authentication", "apiKey": "client-runware-key"}
    acked = plugin(client, ALICE, auth, submit_task(task))
    assert acked.status == 200, acked.body
    assert acked.json() == {"data": [{"taskType": "imageInference", "taskUUID": task}]}
    assert plugin(client, ALICE, poll_task(task)).json()["data"][0]["status"] == "processing"
    done = until_done(client, ALICE, task)
    assert done["data"][0]["imageURL"] == IMAGE
    assert "cost" not in done["data"][0]  # keyrelay asked for it; the client did not

    for r in upstream.requests:
        assert (r.host or "").split(":")[0] == HOST and r.target == "/v1"
        assert r.header_all("authorization") == [f"Bearer {TEST_KEYS['RUNWARE_API_KEY']}"]
        assert b"client-runware-key" not in r.body and b"authentication" not in r.body
        assert r.header("cookie") is None
    assert fake.bodies[0] == [submit_task(task, includeCost=True)]

    # Bob polls Alice's task, or takes its UUID for his own: refused, nothing reaches Runware.
    sent = len(upstream.requests)
    refused = plugin(client, BOB, poll_task(task))
    assert refused.status == 404 and refused.json()["type"].endswith("/unknown-job")
    taken = plugin(client, BOB, submit_task(task.upper()))
    assert taken.status == 409 and taken.json()["type"].endswith("/task-exists")
    other = plugin(client, ALICE, {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4())})
    assert other.status == 403 and other.json()["type"].endswith("/task-not-allowed")
    malformed = plugin(client, ALICE, {"taskType": "getResponse", "taskUUID": "not-a-uuid"})
    assert malformed.status == 400 and malformed.json()["type"].endswith("/invalid-tasks")
    assert len(upstream.requests) == sent

    # Without a budget the spend is still kept: what Runware said the task cost.
    lines = log_lines(log, 3)
    assert sum(x.get("cost", 0) for x in lines) == pytest.approx(fake.billed[task])


def test_under_a_budget_each_task_is_charged_what_runware_bills(
    keyrelay_factory: Any, upstream: UpstreamServer, fake: FakeRunware, tmp_path: Path
) -> None:
    client, _ = start(keyrelay_factory, tmp_path, budget={"daily": 0.25})
    usage_of = lambda: client.get(  # noqa: E731
        "/_keyrelay/usage", [("Cookie", f"kr_session={ALICE}")]
    ).json()
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    assert plugin(client, ALICE, submit_task(first, numberResults=2)).status == 200
    held = usage_of()
    assert held["reserved"] == pytest.approx(2 * UNIT) and held["spent"] == 0
    # A client that asks for the cost itself sees it.
    assert plugin(client, ALICE, submit_task(second, includeCost=True)).status == 200
    # 0.24 reserved: another 0.08 does not fit in 0.25 until results settle what they cost.
    assert plugin(client, ALICE, submit_task(third)).status == 429

    done = until_done(client, ALICE, first)
    assert len(done["data"]) == 2 and all("cost" not in x for x in done["data"])
    shown = until_done(client, ALICE, second)
    assert shown["data"][0]["cost"] == COSTS["imageInference"]
    settled = usage_of()
    assert settled["reserved"] == 0
    assert settled["spent"] == pytest.approx(fake.billed[first] + fake.billed[second])
    assert plugin(client, ALICE, submit_task(third)).status == 200  # room again

    unpriced = plugin(client, BOB, submit_task(str(uuid.uuid4()), model="google:4@2"))
    assert unpriced.status == 403 and unpriced.json()["type"].endswith("/unpriced")
    assert all(body[0].get("model") != "google:4@2" for body in fake.bodies)
