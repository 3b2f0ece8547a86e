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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from addon.config.model import Text, fail, section

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


def _task_type(name: str) -> str:
    if not _TYPE.fullmatch(name):
        fail("a task type is a name like imageInference")
    return name


TaskType = Annotated[Text, AfterValidator(_task_type)]


@section
class TaskForm:
    form: Literal["tasks"]  # the only form there is, named so that another can come
    submit: tuple[TaskType, ...]  # task types that start a task: owned by their caller, priced
    poll: TaskType  # the task type that names earlier tasks by their UUID

    def __post_init__(self) -> None:
        if self.poll in self.submit:
            fail("a task type cannot both submit and poll", "poll")

    def allows(self, task_type: str) -> bool:
        return task_type == self.poll or task_type in self.submit
