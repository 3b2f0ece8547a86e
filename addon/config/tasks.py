"""The `body:` section of a provider whose every call is one URL taking an array of tasks.

    body:
      form: tasks                                  # a JSON array of {taskType, taskUUID, ...}
      submit: [imageInference, videoInference]     # the task types that start a (billed) task
      poll: getResponse                            # the task type that reads a task's result

Runware's HTTP API is so (addon/profiles/runware.yaml). The task types named here are all a
request may hold (else 403); `authentication` tasks are taken out (the client never chooses the
key); each submitted task's UUID is its caller's (addon/jobs/) and its cost is metered per task
(addon/metering/runware.py). The checks are in addon/guard/runware.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from addon.config.node import Node

FORMS = ("tasks",)
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]*")

# A task, and the fields every reader of one needs (the guard, ownership, metering).
Task = dict[str, Any]
TYPE = "taskType"
UUID = "taskUUID"
RESULTS = "numberResults"  # results one task makes (Runware's default: 1)


def uuid_of(task: Task) -> str:
    """A task's UUID as keyrelay keys it (Runware's may differ in case only)."""
    return str(task[UUID]).lower()


def results(task: Task) -> int | None:
    """How many results a task asks for: a JSON whole number of at least 1 (absent: 1)."""
    value = task.get(RESULTS, 1)
    return value if type(value) is int and value >= 1 else None


@dataclass(frozen=True, slots=True)
class TaskForm:
    submit: tuple[str, ...]  # task types that start a task: owned by their caller, priced
    poll: str  # the task type that names earlier tasks by their UUID

    def allows(self, task_type: str) -> bool:
        return task_type == self.poll or task_type in self.submit


def parse_body_form(node: Node | None) -> TaskForm | None:
    if node is None:
        return None
    form = node.text("form")
    if form not in FORMS:
        node.fail(f"must be one of {', '.join(FORMS)}", "form")
    submit = node.texts("submit")
    poll = node.text("poll")
    for i, name in enumerate((*submit, poll)):
        if not _TYPE.fullmatch(name):
            where = f"submit[{i}]" if i < len(submit) else "poll"
            node.fail("a task type is a name like imageInference", where)
    if poll in submit:
        node.fail("a task type cannot both submit and poll", "poll")
    node.finish()
    return TaskForm(submit, poll)
