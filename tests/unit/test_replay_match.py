"""Matching a live request to a recorded one: JSON by value, a query as a set, names only."""

from __future__ import annotations

from addon.observe.replay_match import Recording, Shape


def shape(target: str = "/v1/x?a=1&b=2", body: bytes = b'{"k": 1, "j": [1]}') -> Shape:
    return Shape.of("POST", "API.example.com", 443, target, body)


def test_json_by_value_and_query_as_a_set() -> None:
    recording = Recording([(shape(), "answer")])
    assert recording.take(shape("/v1/x?b=2&a=1", b'{"j":[1],"k":1}')) == "answer"
    assert recording.take(shape()) is None  # served once
    assert len(recording) == 0


def test_reuse_serves_again() -> None:
    recording = Recording([(shape(), "answer")], reuse=True)
    assert recording.take(shape()) == recording.take(shape()) == "answer"


def test_a_body_that_is_not_json_matches_byte_for_byte() -> None:
    recording = Recording([(shape(body=b"{not json"), "answer")])
    assert recording.take(shape(body=b"{not  json")) is None
    assert recording.take(shape(body=b"{not json")) == "answer"


def test_why_not_names_what_differs_never_the_values() -> None:
    recording = Recording([(shape(), "answer")])
    asked = shape("/v1/x?a=secret&b=2", b'{"k": 2, "j": [1]}')
    detail = recording.why_not(asked)
    assert detail.endswith("the nearest differs in query a; JSON body k")
    assert "secret" not in detail
    assert "holds no replayable" in Recording([]).why_not(asked)
