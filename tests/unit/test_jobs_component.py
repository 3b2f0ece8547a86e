"""Ownership on flows: a submission records its caller, other callers get 404 unknown-job."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow
from support.guard import rules, token_entry

from addon import flowstate
from addon.caller import Caller
from addon.config.rules import Rules, load
from addon.jobs.component import Ownership
from addon.jobs.owners import OwnersUnavailable
from addon.problems import Refusal
from addon.resources import Resources
from addon.routing.router import Route, Router
from addon.transport.component import _ANSWER_WHOLE as ANSWER_WHOLE

QUEUE = "https://queue.fal.run/fal-ai/flux"


def load_rules(tmp_path: Path, **sections: object) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(rules(**sections))  # type: ignore[arg-type]
    return load(path, {"KR_TOKENS": token_entry("alice", "t"), "FAL_KEY": "k"})


TOKENS = {"defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}}}


def ownership(rules_: Rules) -> Ownership:
    jobs = Ownership()
    with Resources().reload() as live:
        install = jobs.prepare(rules_, live)
    install()
    return jobs


def call(rules_: Rules, method: str, target: str, identity: str) -> tuple[http.HTTPFlow, Route]:
    flow = tflow.tflow()
    flow.request.method = method
    flow.request.path = "/api/fal/proxy"
    flow.request.headers["x-fal-target-url"] = target
    route = Router(rules_).route(method, flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route), route
    flowstate.of(flow)["identity"] = identity
    return flow, route


def submit(jobs: Ownership, rules_: Rules, identity: str, status: int = 200) -> str:
    job_id = str(uuid.uuid4())
    flow, route = call(rules_, "POST", f"{QUEUE}/dev", identity)
    assert asyncio.run(jobs.requestheaders(flow, route, caller_of(flow))) is None
    body = json.dumps({"request_id": job_id}).encode()
    flow.response = http.Response.make(status, body, {"content-type": "application/json"})
    jobs.responseheaders(flow)
    assert (flow in ANSWER_WHOLE) is (status < 300)  # declared to transport: buffered
    asyncio.run(jobs.response(flow))
    return job_id


def read(jobs: Ownership, rules_: Rules, identity: str, job_id: str) -> Refusal | None:
    flow, route = call(rules_, "GET", f"{QUEUE}/requests/{job_id}/status", identity)
    return asyncio.run(jobs.requestheaders(flow, route, caller_of(flow)))


def test_only_the_submitter_reads_the_job(tmp_path: Path) -> None:
    rules_ = load_rules(tmp_path, **TOKENS)
    jobs = ownership(rules_)
    job_id = submit(jobs, rules_, "token:alice")
    assert read(jobs, rules_, "token:alice", job_id) is None
    for identity, job in (("token:bob", job_id), ("token:alice", str(uuid.uuid4()))):
        refusal = read(jobs, rules_, identity, job)
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.reason) == (404, "unknown-job")


def test_a_failed_submission_records_nothing(tmp_path: Path) -> None:
    rules_ = load_rules(tmp_path, **TOKENS)
    jobs = ownership(rules_)
    job_id = submit(jobs, rules_, "token:alice", status=500)
    assert isinstance(read(jobs, rules_, "token:alice", job_id), Refusal)


def test_without_authentication_or_when_turned_off_anyone_reads(tmp_path: Path) -> None:
    for sections in ({}, {**TOKENS, "fal": {"ownership": False}}):
        rules_ = load_rules(tmp_path, **sections)
        assert read(ownership(rules_), rules_, "ip:10.0.0.1", str(uuid.uuid4())) is None


class Down:
    async def remember(self, job: str, owner: str, ttl: int) -> None:
        raise OwnersUnavailable("unreachable: ConnectionError")

    async def owner(self, job: str) -> str | None:
        raise OwnersUnavailable("unreachable: ConnectionError")


@pytest.mark.parametrize(("on_error", "status"), [("closed", 503), ("open", None)])
def test_a_store_that_fails_follows_on_error(
    tmp_path: Path, on_error: str, status: int | None
) -> None:
    rules_ = load_rules(tmp_path, **TOKENS, top={"limits_backend": {"on_error": on_error}})
    jobs = ownership(rules_)
    jobs.owners = Down()
    refusal = read(jobs, rules_, "token:bob", str(uuid.uuid4()))
    assert (refusal.status if refusal else None) == status


def openai_call(
    jobs: Ownership, rules_: Rules, method: str, path: str, body: bytes, identity: str
) -> tuple[http.HTTPFlow, Refusal | None]:
    """requestheaders then request, as the relay runs them, for an OpenAI call."""
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, path
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = body
    route = Router(rules_).route(method, path, flow.request.headers.get)
    assert isinstance(route, Route), route
    flowstate.of(flow)["identity"] = identity
    refusal = asyncio.run(jobs.requestheaders(flow, route, caller_of(flow)))
    return flow, refusal or asyncio.run(jobs.request(flow))


@pytest.mark.parametrize(("store", "kept"), [(True, True), (False, False), (None, False)])
def test_a_chat_completion_is_owned_only_when_it_is_stored(
    tmp_path: Path, store: bool | None, kept: bool
) -> None:
    rules_ = load_rules(tmp_path, **TOKENS)
    jobs = ownership(rules_)
    request: dict[str, object] = {"model": "gpt-4o-mini", "messages": []}
    if store is not None:
        request["store"] = store
    body = json.dumps(request).encode()
    flow, refusal = openai_call(jobs, rules_, "POST", "/api/openai/chat/completions", body, "a")
    assert refusal is None
    made = "chatcmpl-0123456789abcdef"
    flow.response = http.Response.make(200, json.dumps({"id": made}).encode(), {})
    jobs.responseheaders(flow)
    asyncio.run(jobs.response(flow))
    assert flowstate.of(flow).get("job") == (f"openai.chat_completion:{made}" if kept else None)
    _, mine = openai_call(jobs, rules_, "GET", f"/api/openai/chat/completions/{made}", b"", "a")
    assert (mine is None) is kept  # never stored: nobody's, not even its caller's


def caller_of(flow: http.HTTPFlow) -> Caller:
    """Who the guard would have said calls (the tests put the identity in the flow's state)."""
    return Caller(flowstate.of(flow)["identity"])
