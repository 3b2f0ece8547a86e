"""Which objects a request names, wherever and however it names them (addon/jobs/objects.py)."""

from __future__ import annotations

import json

import pytest

from addon.config.operations import Catalogue
from addon.config.profiles import load
from addon.config.rules import Rules
from addon.jobs import objects

OPENAI = load("openai")
FAL = load("fal")
RESP = "resp_68af0c1d2e3f4a5b6c7d8e9f"
JSON = "application/json"
JOB = "0b6c2a1e-4f3d-4e2a-9c1b-7a8d9e0f1a2b"


def catalogue(profile_name: str) -> Catalogue:
    profile = load(profile_name)
    return Catalogue(profile.operations, profile.objects, (), profile.name)


def body_names(cat: Catalogue, content_type: str, body: bytes) -> list[objects.Named]:
    return objects.in_body(cat, content_type, body)[0]


def keys(named: list[objects.Named]) -> set[str]:
    return {n.key for n in named}


@pytest.mark.parametrize(
    "path",
    [
        f"/fal-ai/flux/requests/{JOB}/status",
        f"/fal-ai/flux/requests;v=1/{JOB}",  # a path parameter on the marker
        f"/fal-ai/flux/requests/{JOB};v=1",  # ... or on the id
        f"/fal-ai/flux/request/{JOB}",  # a singular lookalike
        f"/fal-ai/flux/dev/{JOB.upper()}",  # another case, anywhere in the path
        f"/fal-ai/flux/requests/{JOB.replace('-', '%2D')}",  # an escaped hyphen
    ],
)
def test_a_fal_request_id_names_its_job_wherever_it_stands(path: str) -> None:
    named = objects.in_path(catalogue("fal"), "GET", "queue.fal.run", path)
    assert keys(named) == {f"fal.request:{JOB}"}


def test_an_id_in_the_query_names_a_job_too() -> None:
    mine = "11111111-2222-4333-8444-555555555555"
    assert keys(objects.in_query(catalogue("fal"), f"logs=1&request_id={JOB}")) == {
        f"fal.request:{JOB}"
    }
    assert keys(objects.in_query(catalogue("fal"), f"x=a,{mine.upper()}")) == {
        f"fal.request:{mine}"
    }
    assert objects.in_query(catalogue("fal"), "logs=1") == ()


def test_a_placeholder_that_is_not_an_id_names_nothing_anyone_owns() -> None:
    with pytest.raises(objects.Invalid):
        objects.in_path(catalogue("openai"), "GET", "api.openai.com", "/v1/responses/x")
    for path in (f"/v1/responses/{RESP}", f"/V1//Responses;x=1/{RESP.upper()}/"):
        named = objects.in_path(catalogue("openai"), "GET", "api.openai.com", path)
        assert keys(named) == {f"openai.response:{RESP.lower()}"}, path
    inference = catalogue("inference")
    for path in ("/TASKS/T_1", "/tasks//t_1;v=1", "/tasks/t_1/stream"):
        named = objects.in_path(inference, "GET", "api.inference.sh", path)
        assert keys(named) == {"inference.task:t_1"}, path
    with pytest.raises(objects.Invalid):  # a path of a task's shape with no task id in it
        objects.in_path(inference, "GET", "api.inference.sh", "/tasks/a.b")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o", "previous_response_id": RESP, "input": "hi"},
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": RESP}]}]},
        {"metadata": {RESP: "as a key"}},
        {"previous_response_id": RESP.upper()},
    ],
)
def test_an_id_anywhere_in_a_json_body_names_the_object(body: dict) -> None:
    assert keys(body_names(catalogue("openai"), JSON, json.dumps(body).encode())) == {
        f"openai.response:{RESP.lower()}"
    }


def test_escapes_forms_and_bodies_that_name_nothing() -> None:
    openai = catalogue("openai")
    escaped = ('{"previous_response_id": "\\u0072esp_' + RESP[5:] + '"}').encode()
    assert keys(body_names(openai, JSON, escaped)) == {f"openai.response:{RESP}"}
    form = f'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n{RESP}\r\n--b--'.encode()
    multipart = "multipart/form-data; boundary=b"
    assert keys(body_names(openai, multipart, form)) == {f"openai.response:{RESP}"}
    urlencoded = f"a=1&previous_response_id={RESP}".encode()
    named = body_names(openai, "application/x-www-form-urlencoded", urlencoded)
    assert keys(named) == {f"openai.response:{RESP}"}
    prose = json.dumps({"input": f"what is {RESP}?"}).encode()  # a mention is not a reference
    assert body_names(openai, JSON, prose) == []
    for content_type, body in [(JSON, b"{not json"), (multipart, b"no parts")]:
        with pytest.raises(objects.Invalid):
            body_names(openai, content_type, body)
    # Another type: read as JSON when it is JSON (a lenient server may), else it names nothing.
    plain = json.dumps({"previous_response_id": RESP}).encode()
    assert keys(body_names(openai, "text/plain", plain)) == {f"openai.response:{RESP}"}
    assert body_names(openai, "audio/mpeg", b"\xff\xfb" + RESP.encode()) == []


def test_a_body_too_large_to_walk_is_refused() -> None:
    body = json.dumps([0] * (objects.MAX_WALK + 1)).encode()
    with pytest.raises(objects.Invalid):
        body_names(catalogue("openai"), JSON, body)


def test_the_created_id_from_a_body_a_header_or_a_stream() -> None:
    response = OPENAI.objects["response"]
    assert objects.id_in_answer(response, json.dumps({"id": RESP}).encode(), {}.get) == RESP
    assert objects.id_in_answer(response, b'{"id": "not-one"}', {}.get) is None
    request = FAL.objects["request"]
    header = {"x-fal-request-id": JOB}.get
    assert objects.id_in_answer(request, b"{}", header) == JOB
    tap = objects.StreamTap(response)
    event = json.dumps({"type": "response.created", "response": {"id": RESP}}).encode()
    for chunk in [b"event: response.created\ndata: ", event[:10], event[10:], b"\n\n", b""]:
        tap(chunk)
    assert tap.id == RESP


def test_a_rules_file_can_declare_a_provider_with_a_new_object_kind(tmp_path) -> None:
    """No code: a provider written in rules.yaml has the built-in profiles' powers."""
    from addon.config.rules import load as load_rules

    (tmp_path / "rules.yaml").write_text(
        """
providers:
  acme:
    match: {prefix: /api/acme}
    upstream: https://api.acme.test
    credential: {header: x-key, key: {env: K}}
    objects:
      render: {id: "rnd_[0-9a-z]{6,}", in_answer: [render.id], in_paths: true}
    operations:
      renders.create:
        {op: POST api.acme.test/v2/renders, kind: submit, browser: true, creates: render}
      renders.get: {op: "GET api.acme.test/v2/renders/{render}", kind: poll, browser: true}
    allow: [browser]
"""
    )
    rules: Rules = load_rules(tmp_path / "rules.yaml", {"K": "k"})
    cat = rules.providers[0].catalogue
    assert [o.name for o in cat.operations] == ["renders.create", "renders.get"]
    assert keys(objects.in_path(cat, "GET", "api.acme.test", "/v2/x/rnd_abc123")) == {
        "acme.render:rnd_abc123"
    }
