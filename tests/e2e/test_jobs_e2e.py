"""Jobs belong to whoever started them (addon/jobs): fal queue requests and inference.sh tasks,
through the real mitmdump, with token auth (alice, bob), in memory and in a shared Redis."""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from support.client import HttpClient, Reply
from support.guard import rules, token_entry
from support.proxy import KeyrelayProcess
from support.redis_server import RedisServer
from support.upstream import UpstreamServer, json_response

FAL_PROXY = "/api/fal/proxy"
INF_PROXY = "/api/inference/proxy"
QUEUE = "https://queue.fal.run"
INFERENCE = "https://api.inference.sh"
SUBMIT_PATH = "/fal-ai/flux/dev"
ALICE, BOB = "alice-token-7c1e", "bob-token-2f9a"
TOKENS = {"KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)])}
TOKEN_AUTH = {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}}
INF_TASK = "tsk_01j8zq4m7w"  # inference.sh ids: lower-case letters, digits, '_' and '-'


# -- helpers ------------------------------------------------------------------------------------


def auth_rules(*, top: dict[str, Any] | None = None, **provider: dict[str, Any]) -> str:
    """Token auth for every provider (so ownership is on by default), with inference."""
    return rules(defaults=TOKEN_AUTH, top=top, inference=provider.pop("inference", {}), **provider)


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")] if token else []


def fal(
    c: HttpClient, method: str, target_path: str, token: str | None, body: bytes | None = None
) -> Reply:
    """`method` on https://queue.fal.run<target_path> through the fal proxy path."""
    headers = [("x-fal-target-url", QUEUE + target_path), *bearer(token)]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    return c.request(method, FAL_PROXY, body, headers)


def inf(
    c: HttpClient,
    method: str,
    target_path: str,
    token: str | None,
    *,
    via_query: bool = False,
    body: bytes | None = None,
) -> Reply:
    """`method` on https://api.inference.sh<target_path>, the target in x-inf-target-url or
    (via_query) URL-encoded in the `__inf_target` query parameter."""
    url = INFERENCE + target_path
    headers = bearer(token)
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    if via_query:
        path = f"{INF_PROXY}?__inf_target={urllib.parse.quote(url, safe='')}"
        return c.request(method, path, body, headers)
    return c.request(method, INF_PROXY, body, [("x-inf-target-url", url), *headers])


def fal_accepts(upstream: UpstreamServer, job_id: str, status: int = 200) -> None:
    """The fake fal queue answers a submission the way fal does: the id in body and header."""
    answer = {
        "request_id": job_id,
        "status": "IN_QUEUE",
        "status_url": f"{QUEUE}/fal-ai/flux/requests/{job_id}/status",
        "response_url": f"{QUEUE}/fal-ai/flux/requests/{job_id}",
        "cancel_url": f"{QUEUE}/fal-ai/flux/requests/{job_id}/cancel",
    }
    upstream.route(
        "POST",
        SUBMIT_PATH,
        json_response(answer, status, [("x-fal-request-id", job_id)]),
        host="queue.fal.run",
    )


def submit_fal(c: HttpClient, upstream: UpstreamServer, token: str) -> str:
    """Submit a fal queue job as `token`; returns its (fresh) id, as fal answered it."""
    job_id = str(uuid.uuid4())
    fal_accepts(upstream, job_id)
    before = len(upstream.requests)
    reply = fal(c, "POST", SUBMIT_PATH, token, b'{"prompt": "a cat"}')
    assert reply.status == 200, reply.body
    assert reply.json()["request_id"] == job_id
    sent = upstream.wait_for_requests(before + 1)[-1]
    assert (sent.method, sent.path, sent.host) == ("POST", SUBMIT_PATH, "queue.fal.run")
    return job_id


def is_unknown_job(reply: Reply) -> bool:
    """Refused as no job of the caller's (404), or as no call the browser makes (403): either
    way nothing reaches the upstream and nothing says whether the id exists."""
    return (
        reply.status in (403, 404)
        and reply.header("content-type") == "application/json"
        and reply.json()["type"].endswith(("/unknown-job", "/operation-not-allowed"))
    )


def assert_unknown_job(reply: Reply, what: object = "") -> None:
    assert is_unknown_job(reply), (what, reply.status, reply.body)


def seen(upstream: UpstreamServer) -> list[tuple[str, str]]:
    return [(r.method, r.target) for r in upstream.requests]


@pytest.fixture
def proxy(keyrelay_factory: Any) -> KeyrelayProcess:
    """keyrelay with token auth (alice, bob) on every provider: ownership on by default."""
    started: KeyrelayProcess = keyrelay_factory(auth_rules(), env=TOKENS)
    return started


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


# -- 1. fal: only the submitter reads or cancels ------------------------------------------------


def test_fal_job_is_readable_only_by_whoever_submitted_it(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    base = f"/fal-ai/flux/requests/{job}"  # fal's status URLs drop the app's sub-path (/dev)
    reads = [
        ("GET", f"{base}/status"),
        ("GET", f"{base}/status?logs=1"),
        ("GET", f"{base}/status/stream"),
        ("GET", base),
        ("PUT", f"{base}/cancel"),
    ]

    upstream.clear_requests()
    for method, path in reads:
        reply = fal(bob, method, path, BOB)
        assert_unknown_job(reply, (method, path))
        assert job not in reply.text  # the problem does not echo the id
    assert seen(upstream) == [], "bob's requests reached the upstream"

    for method, path in reads:
        reply = fal(alice, method, path, ALICE)
        assert reply.status == 200, (method, path, reply.body)
    got = upstream.wait_for_requests(len(reads))
    assert [(r.method, r.target) for r in got] == reads
    assert all(r.host == "queue.fal.run" for r in got)
    assert all((r.header("authorization") or "").startswith("Key test-fal-key") for r in got)

    # An id nobody submitted: 404 for alice too, the same answer bob got for a real one.
    upstream.clear_requests()
    never = f"/fal-ai/flux/requests/{uuid.uuid4()}"
    for method, path in [("GET", f"{never}/status"), ("GET", never), ("PUT", f"{never}/cancel")]:
        assert_unknown_job(fal(alice, method, path, ALICE), (method, path))
    assert seen(upstream) == []


def test_fal_the_id_from_the_header_alone_is_recorded(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    """A submission answered without `request_id` in the body, only in x-fal-request-id."""
    job = str(uuid.uuid4())
    upstream.route(
        "POST",
        SUBMIT_PATH,
        json_response({"status": "IN_QUEUE"}, 202, [("x-fal-request-id", job)]),
        host="queue.fal.run",
    )
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    assert fal(alice, "POST", SUBMIT_PATH, ALICE, b"{}").status == 202
    upstream.clear_requests()
    assert_unknown_job(fal(bob, "GET", f"/fal-ai/flux/requests/{job}/status", BOB))
    assert seen(upstream) == []
    assert fal(alice, "GET", f"/fal-ai/flux/requests/{job}/status", ALICE).status == 200
    assert seen(upstream) == [("GET", f"/fal-ai/flux/requests/{job}/status")]


# -- 2. path tricks ---------------------------------------------------------------------------


def fal_tricks(job: str) -> list[tuple[str, str]]:
    """Spellings of alice's job's status URL that name the same job once normalised, with the
    target path the upstream must receive when alice sends them."""
    upper = job.upper()
    return [
        (f"/fal-ai/flux/requests/{upper}/status", f"/fal-ai/flux/requests/{upper}/status"),
        (f"/fal-ai/flux/REQUESTS/{job}/status", f"/fal-ai/flux/REQUESTS/{job}/status"),
        (f"/fal-ai/flux/Requests/{job}", f"/fal-ai/flux/Requests/{job}"),
        (f"/fal-ai/flux/requests/{job}/", f"/fal-ai/flux/requests/{job}/"),
        (f"/fal-ai/flux/requests/{job}/status/", f"/fal-ai/flux/requests/{job}/status/"),
        (f"/fal-ai/flux/%72equests/{job}/status", f"/fal-ai/flux/requests/{job}/status"),
        (f"/fal-ai/flux/%52EQUESTS/{job}", f"/fal-ai/flux/REQUESTS/{job}"),
        (f"/fal-ai/flux/requests/%{ord(job[0]):02x}{job[1:]}", f"/fal-ai/flux/requests/{job}"),
        (f"/fal-ai/flux//requests/{job}/status", f"/fal-ai/flux//requests/{job}/status"),
        (f"/fal-ai/flux/requests//{job}/status", f"/fal-ai/flux/requests//{job}/status"),
        (f"//fal-ai/flux/requests/{job}", f"//fal-ai/flux/requests/{job}"),
        (f"/fal-ai/flux/requests/{job}/./status", f"/fal-ai/flux/requests/{job}/status"),
        (f"/fal-ai/flux/x/../requests/{job}/status", f"/fal-ai/flux/requests/{job}/status"),
        (f"/fal-ai/flux/requests/x/../{job}/status", f"/fal-ai/flux/requests/{job}/status"),
        (f"/fal-ai/flux/requests/%2e%2e/requests/{job}", f"/fal-ai/flux/requests/{job}"),
        (f"/other-owner/other-app/requests/{job}", f"/other-owner/other-app/requests/{job}"),
        (f"/requests/{job}/status", f"/requests/{job}/status"),
    ]


# Where the id stands something that is no fal id: refused for everyone.
NOT_AN_ID = [
    "/fal-ai/flux/requests/abc/status",
    "/fal-ai/flux/requests/abc",
    "/fal-ai/flux/requests",
    "/fal-ai/flux/requests/",
    "/fal-ai/flux/requests/status",
    "/fal-ai/flux/requests/../requests",
    "/fal-ai/flux/requests/%2e%2e/requests/",
    "/fal-ai/flux/requests/*/status",
    "/fal-ai/flux/requests/00000000-0000-0000-0000-00000000000g/status",
]


def test_fal_path_tricks_never_let_another_caller_through(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    bobs_own = submit_fal(bob, upstream, BOB)
    tricks = fal_tricks(job)
    # bob walks from a job of his own to alice's, and the other way round.
    stolen = [
        f"/fal-ai/flux/requests/{bobs_own}/../{job}/status",
        f"/fal-ai/flux/requests/{bobs_own}/%2E%2E/{job}",
    ]
    own = (f"/fal-ai/flux/requests/{job}/../{bobs_own}/status",)

    upstream.clear_requests()
    for path, _ in tricks:
        assert_unknown_job(fal(bob, "GET", path, BOB), path)
    for path in [*stolen, *NOT_AN_ID]:
        assert_unknown_job(fal(bob, "GET", path, BOB), path)
    for path in NOT_AN_ID:
        assert_unknown_job(fal(alice, "GET", path, ALICE), path)
    assert seen(upstream) == [], "a trick reached the upstream"

    # To alice the same spellings are her job: each reaches the upstream, normalised, unless
    # it is no call the fal client makes (another case): then it is refused for her too.
    reached = []
    for path, sent in tricks:
        reply = fal(alice, "GET", path, ALICE)
        assert reply.status in (200, 403), path
        if reply.status == 200:
            reached.append(sent)
        else:
            assert reply.json()["type"].endswith("/operation-not-allowed"), path
    assert reached, "no spelling of alice's job reached the upstream"
    assert [r.target for r in upstream.wait_for_requests(len(reached))] == reached
    upstream.clear_requests()
    assert fal(bob, "GET", own[0], BOB).status == 200
    assert seen(upstream) == [("GET", f"/fal-ai/flux/requests/{bobs_own}/status")]


def test_fal_dot_segments_that_leave_requests_do_not_name_a_job(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    """`requests/../x` is `/x` once normalised: no operation of the fal client's, and alice's
    job id still in it: refused for bob as naming her job, for alice as no call a client makes."""
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    upstream.clear_requests()
    assert is_unknown_job(fal(bob, "GET", f"/fal-ai/flux/requests/../x/{job}", BOB))
    reply = fal(alice, "GET", f"/fal-ai/flux/requests/../x/{job}", ALICE)
    assert reply.status == 403 and f"/fal-ai/flux/x/{job}" in reply.json()["detail"]
    assert seen(upstream) == []


def test_fal_a_second_requests_segment_cannot_smuggle_another_id(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    """bob names his own job first and alice's after it: whichever `requests` segment fal's
    router reads, keyrelay must not forward a path naming a job that is not bob's."""
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    bobs_own = submit_fal(bob, upstream, BOB)
    upstream.clear_requests()
    for path in [
        f"/fal-ai/flux/requests/{bobs_own}/requests/{job}/status",
        f"/requests/{bobs_own}/requests/{job}",
    ]:
        assert_unknown_job(fal(bob, "GET", path, BOB), path)
    assert seen(upstream) == []


# -- 3. inference.sh ----------------------------------------------------------------------------


def test_inference_task_is_readable_only_by_whoever_ran_it(
    keyrelay_factory: Any, make_client: Any, upstream: UpstreamServer
) -> None:
    proxy = keyrelay_factory(auth_rules(), env=TOKENS)
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    upstream.route(
        "POST",
        "/apps/run",
        json_response({"success": True, "data": {"id": INF_TASK, "status": 1}}),
        host="api.inference.sh",
    )
    run = inf(alice, "POST", "/apps/run", ALICE, body=b'{"app": "infsh/echo", "input": {}}')
    assert run.status == 200, run.body
    assert run.json()["data"]["id"] == INF_TASK
    assert upstream.only_request().host == "api.inference.sh"

    reads = [
        ("GET", f"/tasks/{INF_TASK}"),
        ("GET", f"/tasks/{INF_TASK}/stream"),
        ("POST", f"/tasks/{INF_TASK}/cancel"),
    ]
    tricks = [
        ("GET", f"/TASKS/{INF_TASK.upper()}"),
        ("GET", f"//tasks//{INF_TASK}/"),
        ("GET", f"/x/../tasks/{INF_TASK}/stream"),
        ("GET", f"/tasks/%{ord(INF_TASK[0]):02x}{INF_TASK[1:]}"),
    ]
    for via_query in (False, True):
        upstream.clear_requests()
        for method, path in [*reads, *tricks]:
            body = b"{}" if method == "POST" else None
            reply = inf(bob, method, path, BOB, via_query=via_query, body=body)
            assert_unknown_job(reply, (via_query, method, path))
        assert seen(upstream) == [], via_query

        for method, path in reads:
            body = b"{}" if method == "POST" else None
            reply = inf(alice, method, path, ALICE, via_query=via_query, body=body)
            assert reply.status == 200, (via_query, method, path, reply.body)
        assert seen(upstream) == reads, via_query

    # /tasks alone would list every task on the account: refused for everyone.
    upstream.clear_requests()
    for c, who in ((alice, ALICE), (bob, BOB)):
        for via_query in (False, True):
            for path in ("/tasks", "/tasks/", "/TASKS?limit=100", "/tasks/x/.."):
                assert_unknown_job(inf(c, "GET", path, who, via_query=via_query), path)
    # ...as is an id never recorded, or one not of inference.sh's form.
    for path in ("/tasks/tsk_never_run", "/tasks/a.b", f"/tasks/{'x' * 65}"):
        assert_unknown_job(inf(alice, "GET", path, ALICE), path)
    assert seen(upstream) == []


# -- 4. ownership off ---------------------------------------------------------------------------


def test_ownership_false_lets_any_caller_read_a_job(
    keyrelay_factory: Any, make_client: Any, upstream: UpstreamServer
) -> None:
    proxy = keyrelay_factory(auth_rules(fal={"ownership": False}), env=TOKENS)
    alice, bob = make_client(proxy.port), make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    upstream.clear_requests()
    status = f"/fal-ai/flux/requests/{job}/status"
    assert fal(bob, "GET", status, BOB).status == 200
    never = f"/fal-ai/flux/requests/{uuid.uuid4()}"
    assert fal(bob, "GET", never, BOB).status == 200
    assert seen(upstream) == [("GET", status), ("GET", never)]
    # Auth itself still holds: ownership off is not auth off.
    assert fal(bob, "GET", status, None).status == 401
    assert len(upstream.requests) == 2


def test_ownership_is_off_without_client_auth(client: HttpClient, upstream: UpstreamServer) -> None:
    """The default rules (auth none): a caller is only an address, so jobs are not owned."""
    never = f"/fal-ai/flux/requests/{uuid.uuid4()}/status"
    assert fal(client, "GET", never, None).status == 200
    assert inf(client, "GET", "/tasks", None).status == 403  # a listing: closed by default
    assert inf(client, "GET", "/tasks/tsk_x/stream", None, via_query=True).status == 200
    assert seen(upstream) == [("GET", never), ("GET", "/tasks/tsk_x/stream")]


def test_ownership_enabled_without_auth_and_its_ttl(
    keyrelay_factory: Any, make_client: Any, upstream: UpstreamServer
) -> None:
    """`ownership: {enabled: true, ttl: 1}` with auth none: on (the owner is the address), and
    an owner is forgotten after its ttl."""
    proxy = keyrelay_factory(rules(fal={"ownership": {"enabled": True, "ttl": 1}}))
    c = make_client(proxy.port)
    job = submit_fal(c, upstream, "")
    upstream.clear_requests()
    assert_unknown_job(fal(c, "GET", f"/fal-ai/flux/requests/{uuid.uuid4()}", None))
    assert fal(c, "GET", f"/fal-ai/flux/requests/{job}", None).status == 200
    time.sleep(1.3)
    assert_unknown_job(fal(c, "GET", f"/fal-ai/flux/requests/{job}", None))
    assert len(upstream.requests) == 1


# -- 5. owners shared through Redis ---------------------------------------------------------------


def test_two_instances_share_owners_through_redis(
    keyrelay_factory: Any, make_client: Any, upstream: UpstreamServer, redis_server: RedisServer
) -> None:
    text = auth_rules(
        top={"limits_backend": {"redis": redis_server.url}}, fal={"ownership": {"ttl": 600}}
    )
    a, b = keyrelay_factory(text, env=TOKENS), keyrelay_factory(text, env=TOKENS)
    job = submit_fal(make_client(a.port), upstream, ALICE)
    upstream.clear_requests()
    status = f"/fal-ai/flux/requests/{job}/status"

    assert_unknown_job(fal(make_client(b.port), "GET", status, BOB))
    assert seen(upstream) == []
    assert fal(make_client(b.port), "GET", status, ALICE).status == 200
    assert seen(upstream) == [("GET", status)]

    # One key per job, expiring with its ttl, holding a fingerprint and not the identity.
    store = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        keys = store.keys("*")
        assert keys == [f"keyrelay:job:fal.request:{job}"], keys
        value = store.get(keys[0])
        assert value is not None and "alice" not in value and len(value) == 32
        assert 590 <= store.ttl(keys[0]) <= 600
    finally:
        store.close()


def test_redis_down_fails_closed_with_503(
    keyrelay_factory: Any, make_client: Any, upstream: UpstreamServer, redis_server: RedisServer
) -> None:
    text = auth_rules(top={"limits_backend": {"redis": redis_server.url, "on_error": "closed"}})
    proxy = keyrelay_factory(text, env=TOKENS)
    alice = make_client(proxy.port)
    job = submit_fal(alice, upstream, ALICE)
    redis_server.kill()
    upstream.clear_requests()
    down = fal(alice, "GET", f"/fal-ai/flux/requests/{job}/status", ALICE)
    assert down.status == 503, down.body
    assert down.json()["type"].endswith("/jobs-unavailable")
    assert redis_server.url.split("//")[1].split("/")[0] not in down.text  # no address
    assert seen(upstream) == []
    assert proxy.alive()


# -- 6. only a successful submission is recorded --------------------------------------------------


@pytest.mark.parametrize("status", [500, 400, 302])
def test_a_failed_submission_records_nothing(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer, status: int
) -> None:
    alice = make_client(proxy.port)
    job = str(uuid.uuid4())
    fal_accepts(upstream, job, status)  # the id is in the answer all the same
    reply = fal(alice, "POST", SUBMIT_PATH, ALICE, b"{}")
    assert reply.status == status, reply.body
    upstream.clear_requests()
    for path in (f"/fal-ai/flux/requests/{job}/status", f"/fal-ai/flux/requests/{job}"):
        assert_unknown_job(fal(alice, "GET", path, ALICE), path)
    assert seen(upstream) == []


def test_a_submission_answered_without_an_id_records_nothing(
    proxy: KeyrelayProcess, make_client: Any, upstream: UpstreamServer
) -> None:
    alice = make_client(proxy.port)
    upstream.route(
        "POST",
        "/apps/run",
        json_response({"success": True, "data": {"id": "Not An Id!"}}),
        host="api.inference.sh",
    )
    assert inf(alice, "POST", "/apps/run", ALICE, body=b"{}").status == 200
    proxy.wait_for_output(r"jobs: a task was created without an id we know")
    upstream.clear_requests()
    for path in ("/tasks/not%20an%20id!", "/tasks/Not-An-Id", "/tasks/not-an-id"):
        assert_unknown_job(inf(alice, "GET", path, ALICE), path)
    assert seen(upstream) == []
