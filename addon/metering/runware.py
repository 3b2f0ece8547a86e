"""What Runware tasks cost (`body: {form: tasks}`). Pure.

Runware says what a task cost, in USD, as `cost` on each of its results, when the task asked
(`includeCost: true`; @runware/sdk-js 1.3.2: `includeCost?: boolean` on a task, `cost?: number`
on IImage, IVideoToImage and the other results). keyrelay asks for every task it meters and
takes the figure out again where the client did not ask. Before a submit, each task's worst
case is its `numberResults` times its model's `unit:` price (the most one result, an image or a
video, of that model costs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from addon.config.budget import Price
from addon.config.tasks import TYPE, UUID, Task, TaskForm, results, uuid_of
from addon.metering.prices import NANO, price_for

INCLUDE = "includeCost"
COST = "cost"


def ask_costs(tasks: list[Task], form: TaskForm) -> frozenset[str]:
    """Ask for the cost of every submitted task (in place); the UUIDs of those whose client
    asked itself (they see the figure)."""
    asked = set()
    for task in tasks:
        if task[TYPE] not in form.submit:
            continue
        if task.get(INCLUDE) is True:
            asked.add(uuid_of(task))
        else:
            task[INCLUDE] = True
    return frozenset(asked)


def worst_cases(
    tasks: Sequence[Task], form: TaskForm, prices: Sequence[Price]
) -> dict[str, int] | str:
    """Nano-dollars per submitted task's UUID; or the model of the first task without a price."""
    out: dict[str, int] = {}
    for task in tasks:
        if task[TYPE] not in form.submit:
            continue
        model = task.get("model")
        price = price_for(prices, model, "") if isinstance(model, str) else None
        if price is None or not price.unit:
            return str(model)[:100]
        count = results(task) or 1  # the guard refused any other
        out[uuid_of(task)] = math.ceil(count * price.unit * NANO)
    return out


@dataclass(slots=True)
class Answer:
    """What an answer says each task cost (nano-dollars per UUID, the results' sum)."""

    costs: dict[str, int] = field(default_factory=dict)
    results: int = 0  # results that reported a cost (the profile's unit)
    failed: set[str] = field(default_factory=set)  # named in `errors`
    body: bytes | None = None  # the answer without the costs the client did not ask for


def read_answer(body: bytes, shown: Collection[str]) -> Answer:
    """The costs of a Runware answer (`{"data": [{taskUUID, cost, ...}], "errors": [...]}`),
    and the answer as the client gets it: without `cost` on results of tasks not in `shown`."""
    answer = Answer()
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return answer
    if not isinstance(data, dict):
        return answer
    hidden = False
    for item in _items(data, "data"):
        uuid, cost = item.get(UUID), item.get(COST)
        if not isinstance(uuid, str) or COST not in item:
            continue
        uuid = uuid.lower()
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            answer.costs[uuid] = answer.costs.get(uuid, 0) + math.ceil(cost * NANO)
            answer.results += 1
        if uuid not in shown:
            del item[COST]
            hidden = True
    for item in _items(data, "errors"):
        if isinstance(uuid := item.get(UUID), str):
            answer.failed.add(uuid.lower())
    if hidden:
        answer.body = json.dumps(data, separators=(",", ":")).encode()
    return answer


def _items(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = data.get(name)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
