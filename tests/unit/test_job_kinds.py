"""Which requests start and name jobs, on paths as the router normalises them."""

from __future__ import annotations

import uuid

import pytest

from addon.jobs import kinds
from addon.targets import parse_target

ID = str(uuid.uuid4())


def path(url: str) -> str:
    """The path the router sends upstream: the target normalised by targets.py."""
    return parse_target(url).path_and_query


def test_hosts_decide_the_kind() -> None:
    assert kinds.kind_of("queue.fal.run") == "fal"
    assert kinds.kind_of("api.inference.sh") == "inference"
    assert kinds.kind_of("fal.run") is None  # synchronous runs have no job
    assert kinds.kind_of("inference.sh.evil.example") is None


@pytest.mark.parametrize(
    ("method", "url", "submits"),
    [
        ("POST", "https://queue.fal.run/fal-ai/flux/dev", True),
        ("POST", "https://queue.fal.run/fal-ai/flux/dev?fal_webhook=x", True),
        ("GET", "https://queue.fal.run/fal-ai/flux/dev", False),
        ("POST", f"https://queue.fal.run/fal-ai/flux/requests/{ID}", False),
        ("POST", "https://queue.fal.run/fal-ai", False),
    ],
)
def test_fal_submissions(method: str, url: str, submits: bool) -> None:
    assert kinds.submits("fal", method, path(url)) is submits


@pytest.mark.parametrize(
    "url",
    [
        f"https://queue.fal.run/fal-ai/flux/requests/{ID}",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID}/status?logs=1",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID}/status/stream",
        f"https://queue.fal.run/fal-ai/flux/dev/requests/{ID}/cancel",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID.upper()}/",
        f"https://queue.fal.run/fal-ai/flux/REQUESTS/{ID}",
        f"https://queue.fal.run/fal-ai/flux/%72equests/{ID}",
        f"https://queue.fal.run/fal-ai/flux//requests//{ID}",
        f"https://queue.fal.run/fal-ai/flux/x/../requests/{ID}",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID[:-1]}%{ord(ID[-1]):02X}",
    ],
)
def test_every_spelling_of_a_fal_request_names_the_same_job(url: str) -> None:
    assert kinds.named_job("fal", path(url)) == kinds.Named(ID)


@pytest.mark.parametrize(
    "url",
    [
        "https://queue.fal.run/fal-ai/flux/requests",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID}/requests/{uuid.uuid4()}",
        f"https://queue.fal.run/requests/{ID}/x/requests/{ID}",
        "https://queue.fal.run/fal-ai/flux/requests/abc",
        f"https://queue.fal.run/fal-ai/flux/requests/{ID}x",
    ],
)
def test_what_is_not_a_fal_id_names_no_job_anyone_owns(url: str) -> None:
    assert kinds.named_job("fal", path(url)) == kinds.Named(None)


def test_inference_tasks() -> None:
    assert kinds.submits("inference", "POST", "/apps/run")
    assert not kinds.submits("inference", "GET", "/apps/run")
    assert kinds.named_job("inference", "/tasks/Task_1-a/stream") == kinds.Named("task_1-a")
    assert kinds.named_job("inference", "/Tasks/task_1-a/") == kinds.Named("task_1-a")
    assert kinds.named_job("inference", "/tasks") == kinds.Named(None)  # a list of every task
    assert kinds.named_job("inference", "/tasks/a%2Cb") == kinds.Named(None)
    assert kinds.named_job("inference", "/apps/run") is None
    assert kinds.named_job("inference", "/v2/tasks/abc") == kinds.Named("abc")
    assert kinds.named_job("inference", "/tasks/abc/tasks/def") == kinds.Named(None)


def test_ids_in_answers() -> None:
    def no_header(_name: str) -> str | None:
        return None

    body = b'{"request_id": "%s", "status": "IN_QUEUE"}' % ID.upper().encode()
    assert kinds.id_in_answer("fal", body, no_header) == ID
    header = {"x-fal-request-id": ID}.get
    assert kinds.id_in_answer("fal", b"not json", header) == ID
    assert kinds.id_in_answer("fal", b'{"request_id": "../x"}', no_header) is None
    answer = b'{"success": true, "data": {"id": "abc123", "status": 1}}'
    assert kinds.id_in_answer("inference", answer, no_header) == "abc123"
    assert kinds.id_in_answer("inference", b'{"data": {"id": 7}}', no_header) is None
