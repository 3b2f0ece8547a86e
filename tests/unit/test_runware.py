"""Runware (addon/profiles/runware.yaml): arrays of tasks read strictly, authentication tasks
taken out, only the plugins' task types, each held to the validation rules."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow
from support.guard import token_entry

from addon.caller import Caller
from addon.config.budget import Price
from addon.config.model import ConfigError, read
from addon.config.rules import Rules, load
from addon.config.tasks import TaskForm
from addon.config.validation import ValidationSpec
from addon.guard import runware
from addon.jobs.component import Ownership
from addon.metering import runware as task_costs
from addon.problems import Refusal
from addon.resources import Resources
from addon.routing.router import Route, Router

TASK = "6f1c2c1e-8a5b-4c8e-9c1f-0d2e3f4a5b6c"
OTHER = "0b8f7a51-2a47-4a39-9d27-3e0f6b1c9d84"
FORM = TaskForm("tasks", ("imageInference", "videoInference"), "getResponse")
# What the plugins' Runware client submits (createRunwareClient, image 1.69).
SUBMIT = {
    "taskType": "imageInference",
    "taskUUID": TASK,
    "model": "bfl:5@1",
    "positivePrompt": "a cat",
    "deliveryMethod": "async",
    "outputType": "URL",
    "outputFormat": "PNG",
    "numberResults": 1,
}
POLL = {"taskType": "getResponse", "taskUUID": TASK}


def body(*tasks: Any) -> bytes:
    return json.dumps(list(tasks)).encode()


def checked(raw: bytes, spec: ValidationSpec | None = None) -> list[dict[str, Any]] | Refusal:
    return runware.checked(spec or ValidationSpec(), FORM, raw)


def refusal(raw: bytes, spec: ValidationSpec | None = None) -> tuple[int, str]:
    result = checked(raw, spec)
    assert isinstance(result, Refusal), result
    return result.status, result.reason


def test_the_plugins_submit_and_poll_pass_as_sent() -> None:
    assert checked(body(SUBMIT)) == [SUBMIT]
    assert checked(body(POLL)) == [POLL]
    video = {**SUBMIT, "taskType": "videoInference", "model": "google:3@2", "duration": 8}
    assert checked(body(video, {**POLL, "taskUUID": OTHER})) == [video, {**POLL, "taskUUID": OTHER}]


def test_an_authentication_task_is_taken_out() -> None:
    auth = {"taskType": "authentication", "apiKey": "the-clients-own-key"}
    assert checked(body(auth, SUBMIT)) == [SUBMIT]
    encoded = runware.encode(checked(body(SUBMIT, auth)))  # type: ignore[arg-type]
    assert b"apiKey" not in encoded and b"authentication" not in encoded
    assert refusal(body(auth)) == (400, "invalid-tasks")  # nothing left to do


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"taskType": "getResponse"}',  # not an array
        b"[]",
        body("imageInference"),  # a task that is not an object
        body({"taskUUID": TASK}),  # no taskType
        body({**SUBMIT, "taskType": 7}),
        body({**SUBMIT, "taskUUID": None}),
        body({k: v for k, v in SUBMIT.items() if k != "taskUUID"}),
        body({**SUBMIT, "taskUUID": "not-a-uuid"}),
        body({**SUBMIT, "taskUUID": TASK + "0"}),
        body(SUBMIT, {**POLL, "taskUUID": TASK.upper()}),  # one UUID in two tasks
        b'[{"taskType": "getResponse", "taskUUID": "%s", "taskUUID": "%s"}]'
        % (TASK.encode(), OTHER.encode()),  # which one would Runware read?
        b'[{"taskType": "imageInference", "taskType": "getResponse", "taskUUID": "%s"}]'
        % TASK.encode(),
    ],
)
def test_a_malformed_array_is_a_400(raw: bytes) -> None:
    assert refusal(raw) == (400, "invalid-tasks")


@pytest.mark.parametrize(
    "kind", ["imageUpload", "upscale", "removeBackground", "modelSearch", "textInference", "ping"]
)
def test_other_task_types_are_refused(kind: str) -> None:
    result = checked(body(POLL, {"taskType": kind, "taskUUID": OTHER}))
    assert isinstance(result, Refusal)
    assert (result.status, result.reason) == (403, "task-not-allowed")
    assert kind in result.detail and "imageInference" in result.detail


def test_each_task_is_held_to_the_models_and_max_n() -> None:
    spec = ValidationSpec(models=("bfl:*", "google:3@2"), max_n=2)
    assert checked(body(SUBMIT, POLL | {"taskUUID": OTHER}), spec) == [
        SUBMIT,
        POLL | {"taskUUID": OTHER},
    ]
    second = {**SUBMIT, "taskUUID": OTHER, "model": "openai:1@1"}
    assert refusal(body(SUBMIT, second), spec) == (403, "model-not-allowed")
    nameless = {k: v for k, v in SUBMIT.items() if k != "model"}
    assert refusal(body(nameless), spec) == (403, "model-not-allowed")
    assert refusal(body({**SUBMIT, "numberResults": 3}), spec) == (403, "max-n-exceeded")
    assert checked(body({**SUBMIT, "numberResults": 2}), spec) == [{**SUBMIT, "numberResults": 2}]


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", True, None])
def test_number_results_is_a_whole_number(count: Any) -> None:
    assert refusal(body({**SUBMIT, "numberResults": count})) == (400, "invalid-count")


def test_the_profile_ships_in_the_rules() -> None:
    rules = load(Path(__file__).resolve().parents[2] / "rules.yaml", {})
    provider = next(p for p in rules.providers if p.name == "runware")
    assert provider.tasks == FORM
    assert provider.upstream is not None and provider.upstream.host == "api.runware.ai"
    assert provider.credential.header == "authorization"
    assert [o.name for o in provider.catalogue.operations] == ["tasks"]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"form": "json", "submit": ["a"], "poll": "b"}, "body.form"),
        ({"form": "tasks", "submit": ["a b"], "poll": "b"}, "body.submit[0]"),
        ({"form": "tasks", "submit": ["a"], "poll": "a"}, "body.poll"),
        ({"form": "tasks", "submit": ["a"], "poll": "b", "other": 1}, "body.other"),
    ],
)
def test_a_body_section_is_checked(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        read(TaskForm, entry, "rules.yaml", "body")
    assert e.value.key == key


# -- ownership: a task's UUID is its submitter's -------------------------------------------------

TOKENS = {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}}


def runware_rules(tmp_path: Path, **provider: Any) -> Rules:
    path = tmp_path / "rules.yaml"
    entry = {"profile": "runware", **provider}
    path.write_text(yaml.safe_dump({"defaults": TOKENS, "providers": {"runware": entry}}))
    env = {"KR_TOKENS": token_entry("alice", "a") + "\n" + token_entry("bob", "b")}
    return load(path, {**env, "RUNWARE_API_KEY": "k"})


def ownership(rules: Rules) -> Ownership:
    jobs = Ownership()
    with Resources().reload() as live:
        install = jobs.prepare(rules, live)
    install()
    return jobs


def send(
    jobs: Ownership, rules: Rules, identity: str, *tasks: Any, status: int = 200
) -> Refusal | None:
    """requestheaders, request and (when admitted) response, as the relay runs them."""
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/api/runware"
    flow.request.content = body(*tasks)
    route = Router(rules).route("POST", flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route), route
    refusal = asyncio.run(jobs.requestheaders(flow, route, Caller(identity))) or asyncio.run(
        jobs.request(flow)
    )
    if refusal is None:
        flow.response = http.Response.make(status, b'{"data": []}')
        asyncio.run(jobs.response(flow))
    return refusal


def reason(refusal: Refusal | None) -> tuple[int, str] | None:
    return None if refusal is None else (refusal.status, refusal.reason)


def test_only_the_submitter_polls_a_task(tmp_path: Path) -> None:
    rules = runware_rules(tmp_path)
    jobs = ownership(rules)
    assert send(jobs, rules, "token:alice", SUBMIT) is None
    assert send(jobs, rules, "token:alice", POLL) is None
    assert reason(send(jobs, rules, "token:bob", POLL)) == (404, "unknown-job")
    # Upper case is the same task to keyrelay: no second id for it.
    assert reason(send(jobs, rules, "token:bob", {**POLL, "taskUUID": TASK.upper()})) == (
        404,
        "unknown-job",
    )
    # A task never submitted through keyrelay is nobody's; one of them in a poll refuses it all.
    assert reason(send(jobs, rules, "token:alice", {**POLL, "taskUUID": OTHER})) == (
        404,
        "unknown-job",
    )


def test_a_uuid_taken_by_another_cannot_be_submitted_again(tmp_path: Path) -> None:
    rules = runware_rules(tmp_path)
    jobs = ownership(rules)
    assert send(jobs, rules, "token:alice", SUBMIT) is None
    assert reason(send(jobs, rules, "token:bob", SUBMIT)) == (409, "task-exists")
    assert reason(send(jobs, rules, "token:bob", {**SUBMIT, "taskUUID": TASK.upper()})) == (
        409,
        "task-exists",
    )
    assert send(jobs, rules, "token:alice", SUBMIT) is None  # its own: Runware decides


def test_a_refused_submit_makes_no_owner(tmp_path: Path) -> None:
    rules = runware_rules(tmp_path)
    jobs = ownership(rules)
    assert send(jobs, rules, "token:alice", SUBMIT, status=400) is None
    assert reason(send(jobs, rules, "token:alice", POLL)) == (404, "unknown-job")
    assert send(jobs, rules, "token:bob", SUBMIT) is None  # free to take


def test_ownership_off_checks_nothing(tmp_path: Path) -> None:
    rules = runware_rules(tmp_path, ownership=False)
    jobs = ownership(rules)
    assert send(jobs, rules, "token:bob", POLL) is None


# -- metering: each task's cost, as Runware reports it -------------------------------------------


def test_keyrelay_asks_for_each_submitted_tasks_cost() -> None:
    asked_itself = {**SUBMIT, "taskUUID": OTHER, "includeCost": True}
    tasks = [dict(SUBMIT), asked_itself, dict(POLL)]
    assert task_costs.ask_costs(tasks, FORM) == {OTHER}
    assert tasks == [{**SUBMIT, "includeCost": True}, asked_itself, POLL]  # a poll asks nothing


def test_a_submits_worst_case_is_per_task_results_times_its_models_price() -> None:
    prices = (read(Price, {"model": "bfl:*", "unit": 0.08}, "rules.yaml"),)
    two = {**SUBMIT, "taskUUID": OTHER, "numberResults": 2}
    assert task_costs.worst_cases([SUBMIT, two, POLL], FORM, prices) == {
        TASK: 80_000_000,
        OTHER: 160_000_000,
    }
    unpriced = {**SUBMIT, "model": "google:4@2"}
    assert task_costs.worst_cases([unpriced], FORM, prices) == "google:4@2"
    assert task_costs.worst_cases([POLL], FORM, prices) == {}


def test_an_answers_costs_are_summed_per_task_and_hidden_unless_asked() -> None:
    result = {"taskType": "imageInference", "taskUUID": TASK, "status": "success", "cost": 0.0384}
    other = {**result, "taskUUID": OTHER.upper(), "cost": 0.5}
    answer = {
        "data": [result, dict(result), other, {"taskUUID": TASK, "status": "processing"}],
        "errors": [{"code": "x", "taskUUID": "0f0f0f0f-0000-4000-8000-000000000000"}],
    }
    read = task_costs.read_answer(json.dumps(answer).encode(), shown={OTHER})
    assert read.costs == {TASK: 76_800_000, OTHER: 500_000_000} and read.results == 3
    assert read.failed == {"0f0f0f0f-0000-4000-8000-000000000000"}
    assert read.body is not None
    given = json.loads(read.body)["data"]
    assert ["cost" in item for item in given] == [False, False, True, False]
    # Nothing to take out: the answer goes as Runware sent it.
    assert task_costs.read_answer(json.dumps(answer).encode(), {TASK, OTHER}).body is None
    assert task_costs.read_answer(b"not json", ()).costs == {}


@pytest.mark.parametrize("cost", [-1, "0.1", True, None])
def test_a_cost_that_is_not_a_number_is_not_read(cost: Any) -> None:
    answer = {"data": [{"taskUUID": TASK, "cost": cost}]}
    read = task_costs.read_answer(json.dumps(answer).encode(), ())
    assert read.costs == {} and read.body is not None  # still not handed to the client
