"""Which requests start a job and which name one, for the providers that have jobs. Pure.

Known from the target host, so it holds for any provider in rules.yaml that reaches it:
- fal's queue (`queue.fal.run`): `POST /<owner>/<app>[/<path>]` submits, answered with a
  `request_id` (a UUID, also in `x-fal-request-id`); `.../requests/<id>` and everything under
  it (`/status`, `/status/stream`, `/cancel`) names it, for any app path: fal's status URLs drop
  the app's sub-path.
- inference.sh (`api.inference.sh`): `POST /apps/run` submits, answered with `data.id`;
  `/tasks/<id>` and everything under it names it (wherever `tasks` stands in the path), and
  `/tasks` alone would list every task.

Paths here are the router's normalised target paths (addon/targets.py: dot segments and
unreserved escapes already resolved). Comparisons ignore case and empty segments, and an id
that is not of the provider's own form is no id at all: the request is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["fal", "inference"]

_FAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INFERENCE_ID = re.compile(r"[0-9a-z_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Named:
    """A request that names a job. `id` is None when what stands for it is not an id."""

    id: str | None


def kind_of(host: str) -> Kind | None:
    if host == "queue.fal.run":
        return "fal"
    if host == "inference.sh" or host.endswith(".inference.sh"):
        return "inference"
    return None


def submits(kind: Kind, method: str, path: str) -> bool:
    """Whether the request starts a job (its answer carries the id)."""
    if method != "POST":
        return False
    segments = _segments(path)
    if kind == "fal":
        return len(segments) >= 2 and "requests" not in segments
    return segments == ["apps", "run"]


def named_job(kind: Kind, path: str) -> Named | None:
    """The job a request reads or acts on; None when it names none. Wherever the marker
    segment stands, and only once: `requests/<mine>/requests/<yours>` names no job anyone owns,
    as the provider might read either."""
    marker, form = ("requests", _FAL_ID) if kind == "fal" else ("tasks", _INFERENCE_ID)
    segments = _segments(path)
    places = [i for i, segment in enumerate(segments) if segment == marker]
    if not places:
        return None
    after = places[0] + 1
    if len(places) > 1 or after >= len(segments):
        return Named(None)
    return Named(_valid(form, segments[after]))


def id_in_answer(kind: Kind, body: bytes, header: Callable[[str], str | None]) -> str | None:
    """The id of the job a successful submission started, from its JSON answer."""
    data = _json(body)
    if kind == "fal":
        raw = data.get("request_id") if isinstance(data, dict) else None
        return _valid(_FAL_ID, raw if isinstance(raw, str) else header("x-fal-request-id"))
    inner = data.get("data") if isinstance(data, dict) else None
    raw = inner.get("id") if isinstance(inner, dict) else None
    return _valid(_INFERENCE_ID, raw if isinstance(raw, str) else None)


def _segments(path: str) -> list[str]:
    return [s.lower() for s in path.partition("?")[0].split("/") if s]


def _valid(form: re.Pattern[str], raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.lower()
    return value if form.fullmatch(value) else None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None
