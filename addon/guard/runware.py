"""Bodies that are an array of tasks (`body: {form: tasks}`: Runware). Pure.

Every call is one URL; what it does is in its tasks: `[{"taskType": "imageInference",
"taskUUID": "<uuid the client made>", "model": ..., ...}, {"taskType": "getResponse", ...}]`.
A body is read strictly (a JSON array of objects, each with a taskType and a UUID, no key given
twice, no UUID twice), else 400: what is forwarded is exactly what was checked. An
`authentication` task (Runware's way to give a key in the body) is taken out: the key is
keyrelay's. Then every task must be of a type the profile names (403), and each submitted one
is held to `validation:`: its `model` to `models:`, its `numberResults` to `max_n:`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from addon.config.tasks import RESULTS, TYPE, UUID, Task, TaskForm, results, uuid_of
from addon.config.validation import ValidationSpec
from addon.guard.body_rules import check_model
from addon.problems import Refusal

__all__ = ["TYPE", "UUID", "Task", "checked", "encode", "read", "results", "uuid_of"]

AUTHENTICATION = "authentication"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


class _Duplicate(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:  # which one would Runware read?
            raise _Duplicate(name)
        out[name] = value
    return out


def _invalid(detail: str) -> Refusal:
    return Refusal(400, "invalid-tasks", f"the body must be a JSON array of tasks: {detail}")


def read(body: bytes) -> list[Task] | Refusal:
    """The tasks of a body, each an object with a taskType and (but an authentication task) a
    UUID; no key twice in one object, no UUID in two tasks."""
    try:
        data = json.loads(body, object_pairs_hook=_unique)
    except _Duplicate as e:
        return _invalid(f"a task gives {str(e)[:40]!r} twice")
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        return _invalid("it is not JSON")
    if not isinstance(data, list) or not data:
        return _invalid("it is not a non-empty array")
    seen: set[str] = set()
    for i, task in enumerate(data):
        if not isinstance(task, dict):
            return _invalid(f"task {i} is not an object")
        kind = task.get(TYPE)
        if not isinstance(kind, str) or not kind:
            return _invalid(f"task {i} has no taskType")
        if kind == AUTHENTICATION:
            continue
        uuid = task.get(UUID)
        if not isinstance(uuid, str) or not _UUID.fullmatch(uuid):
            return _invalid(f"task {i} has no taskUUID that is a UUID")
        if uuid.lower() in seen:
            return _invalid(f"task {i} repeats the taskUUID of another")
        seen.add(uuid.lower())
    return data


def checked(spec: ValidationSpec, form: TaskForm, body: bytes) -> list[Task] | Refusal:
    """The tasks to forward: read, without authentication tasks, each allowed and within the
    validation rules."""
    tasks = read(body)
    if isinstance(tasks, Refusal):
        return tasks
    kept = [task for task in tasks if task[TYPE] != AUTHENTICATION]
    if not kept:
        return _invalid("it holds no task but authentication (keyrelay gives the key)")
    for task in kept:
        if refusal := _check(spec, form, task):
            return refusal
    return kept


def _check(spec: ValidationSpec, form: TaskForm, task: Task) -> Refusal | None:
    kind = task[TYPE]
    if not form.allows(kind):
        allowed = ", ".join((*form.submit, form.poll))
        return Refusal(
            403,
            "task-not-allowed",
            f"taskType {kind[:60]!r} is not allowed here (allowed: {allowed})",
        )
    if kind == form.poll:
        return None
    if refusal := check_model(spec, {"model": task.get("model")}):
        return refusal
    return _check_results(spec, task)


def _check_results(spec: ValidationSpec, task: Task) -> Refusal | None:
    count = results(task)
    if count is None:
        return Refusal(400, "invalid-count", f"{RESULTS} must be a whole number of at least 1")
    if spec.max_n is not None and count > spec.max_n:
        return Refusal(403, "max-n-exceeded", f"rule max_n: {RESULTS} may be at most {spec.max_n}")
    return None


def encode(tasks: list[Task]) -> bytes:
    return json.dumps(tasks, separators=(",", ":")).encode()
