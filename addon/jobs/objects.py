"""Which objects a request names, and which id a creating call's answer carries. Pure.

What an object is comes from the provider's profile (addon/config/operations.py): its id's
form, where a creating answer puts the id, and whether ids of its form count wherever they
stand. A request names an object
- through an operation's placeholder (`GET api.openai.com/v1/responses/{response}`);
- for objects marked `in_paths`: through any path segment, or part of one split at `;`, `,`
  and `=`, or any query value, of the id's form: so `requests;v=1/<id>`, `/task/<id>`, another
  host that serves the same jobs, and `?request_id=<id>` all name it, whatever the operation;
- for objects marked `in_bodies`: through any JSON string of the id's form in a JSON request
  body (`previous_response_id`, a `file_id` deep in an input), or any form field's value.

Ids compare without case: a provider that reads them without case must not see a second id.
A placeholder that is not of its object's form names no object anyone owns (`Invalid`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from addon import dotted
from addon.config.operations import Catalogue, ObjectSpec, loosen
from addon.guard import multipart
from addon.problems import Refusal

MAX_WALK = 100_000  # JSON values looked at in one body at most; past it the body is refused
MAX_TAP = 256 * 1024  # bytes of a streamed answer searched for the created object's id
_PIECES = re.compile(r"[;,=]")


class Invalid(Exception):
    """Something stands where an id must be, but is not one; or a body too big to look into."""


@dataclass(frozen=True, slots=True)
class Named:
    spec: ObjectSpec
    id: str  # lower-case

    @property
    def key(self) -> str:
        return self.spec.key(self.id)


def in_path(catalogue: Catalogue, method: str, host: str, path: str) -> tuple[Named, ...]:
    """Every object the request's path names. Raises Invalid when the path has the shape of an
    operation that names an object (without case, path parameters or empty segments: a lenient
    server may read it so) but holds no id of its form there. Depends on nothing but its
    arguments: the caller may remember it."""
    found: dict[str, Named] = {}
    loose = loosen(path)
    for operation in catalogue.naming:
        for kind, raw in (operation.pattern.resembles(method, host, loose) or {}).items():
            spec = catalogue.objects[kind]
            text = unquote(raw)
            if not spec.fits(text):
                raise Invalid(kind)
            _add(found, spec, text)
    if catalogue.path_ids is not None:
        words = [unquote(segment) for segment in path.split("/")]
        _scan(found, catalogue, catalogue.path_ids, words, "in_paths")
    return tuple(found.values())


def in_query(catalogue: Catalogue, query: str) -> tuple[Named, ...]:
    """Every object the query names: any name or value of an id's form (`in_paths` objects)."""
    if catalogue.path_ids is None or not query:
        return ()
    words = [word for item in parse_qsl(query, keep_blank_values=True) for word in item]
    found: dict[str, Named] = {}
    _scan(found, catalogue, catalogue.path_ids, words, "in_paths")
    return tuple(found.values())


def _scan(
    found: dict[str, Named],
    catalogue: Catalogue,
    ids: re.Pattern[str],
    words: Iterable[str],
    marked: str,
) -> None:
    """Each word, and each part of it between `;`, `,` and `=`, that is an id of an object
    marked `marked`: one pattern for all of them first, then which it is."""
    for word in words:
        for piece in (word, *_PIECES.split(word)):
            if piece and ids.fullmatch(piece):
                for spec in catalogue.objects.values():
                    if getattr(spec, marked) and spec.fits(piece):
                        _add(found, spec, piece)


def _add(found: dict[str, Named], spec: ObjectSpec, text: str) -> None:
    named = Named(spec, text.lower())
    found[named.key] = named


def in_body(catalogue: Catalogue, content_type: str, body: bytes) -> tuple[list[Named], Any]:
    """Every object a request body names: any JSON string (escaped or not, however deep), any
    form value, that is an id of an object marked `in_bodies`. A body of another type is read
    as JSON if it is JSON (a lenient server may read it so). Raises Invalid for a body that
    cannot be read as its type says, or is too large to walk. Also the body's JSON value (None
    when it is not JSON), so that nothing parses it twice."""
    if catalogue.body_ids is None or not body:
        return [], None
    kind = content_type.partition(";")[0].strip().lower()
    candidates: Iterable[str]
    data: Any = None
    if kind == "multipart/form-data":
        fields = multipart.form_fields(content_type, body)
        if isinstance(fields, Refusal):
            raise Invalid(fields.detail)
        candidates = (value.decode("utf-8", "replace").strip() for _, value in fields)
    elif kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        candidates = (word for pair in pairs for word in pair)
    else:
        try:
            data = json.loads(body)
        except ValueError as e:  # UnicodeDecodeError included
            if kind == "application/json" or kind.endswith("+json"):
                raise Invalid("the body is not JSON") from e
            return [], None  # neither JSON nor a form: nothing in it reads as a name
        candidates = _strings(data)
    found: dict[str, Named] = {}
    assert catalogue.body_ids is not None
    _scan(found, catalogue, catalogue.body_ids, candidates, "in_bodies")
    return list(found.values()), data


def _strings(data: Any) -> Iterator[str]:
    """Every string in a JSON value (keys too: an id may stand as a key)."""
    pending, seen = [data], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_WALK:
            raise Invalid(f"it holds more than {MAX_WALK} values")
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from (k for k in value if isinstance(k, str))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def id_in_answer(spec: ObjectSpec, body: bytes, header: Callable[[str], str | None]) -> str | None:
    """The id a creating call's (whole, JSON) answer carries, if it is of the object's form."""
    data = _json(body)
    for place in spec.in_answer:
        raw = header(place[7:]) if place.startswith("header:") else dotted.at(data, place)
        if not isinstance(raw, str):
            continue
        if spec.fits(raw):
            return raw.lower()
        if place.startswith("header:") and spec.fits(last := _last_segment(raw)):
            return last.lower()  # `Location: /v1/realtime/calls/rtc_...` names the call
    return None


def _last_segment(url: str) -> str:
    return url.partition("?")[0].rstrip("/").rpartition("/")[2]


class StreamTap:
    """Finds a created object's id in a server-sent event stream as it passes (the first event
    that carries one, within MAX_TAP bytes): a stream stage that passes every byte on."""

    def __init__(self, spec: ObjectSpec) -> None:
        self.spec = spec
        self.id: str | None = None
        self._partial = b""
        self._seen = 0

    def __call__(self, chunk: bytes) -> bytes:
        if self.id is None and self._seen <= MAX_TAP:
            self._look(chunk)
        return chunk

    def _look(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop() if chunk else b""
        for line in lines:
            if line.startswith(b"data:"):
                found = id_in_answer(self.spec, line[5:].strip(), lambda _: None)
                if found is not None:
                    self.id = found
                    return


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None
