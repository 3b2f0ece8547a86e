"""A fake Runware (api.runware.ai/v1), answering as its HTTP API does for the tasks the CE.SDK
plugins' Runware client sends: a submit with `deliveryMethod: async` is acknowledged
(`{taskType, taskUUID}`); `getResponse` answers `processing` `polls_before_done` times, then one
result per `numberResults`, each with `cost` (USD) when the task asked for it (`includeCost`).
A submit without async delivery answers its results at once. It bills every result, asked or
not: `billed` is what keyrelay should charge."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

HOST = "api.runware.ai"
IMAGE = "https://im.runware.ai/image/ws/2/ii/result.png"
VIDEO = "https://vm.runware.ai/video/ws/2/vi/result.mp4"
COSTS = {"imageInference": 0.0384, "videoInference": 1.6}  # USD per result


@dataclass
class FakeRunware:
    polls_before_done: int = 1
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # taskUUID -> its task
    polls: Counter[str] = field(default_factory=Counter)
    billed: dict[str, float] = field(default_factory=dict)  # taskUUID -> USD
    bodies: list[list[dict[str, Any]]] = field(default_factory=list)

    def install(self, upstream: UpstreamServer) -> FakeRunware:
        upstream.route("POST", "/v1", self._tasks, host=HOST)
        return self

    def _tasks(self, req: RecordedRequest, w: ResponseWriter) -> None:
        body = req.json()
        self.bodies.append(body)
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for task in body:
            kind, uuid = task.get("taskType"), task.get("taskUUID")
            if kind == "getResponse":
                self._poll(uuid, data, errors)
            elif kind in COSTS and uuid not in self.tasks:
                self.tasks[uuid] = task
                if task.get("deliveryMethod") == "async":
                    data.append({"taskType": kind, "taskUUID": uuid})
                else:
                    data += self._results(uuid)
            else:
                errors.append({"code": "invalidTask", "taskUUID": uuid, "message": str(kind)})
        w.send_json({"data": data, **({"errors": errors} if errors else {})})

    def _poll(self, uuid: str, data: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        task = self.tasks.get(uuid)
        if task is None:
            errors.append({"code": "taskNotFound", "taskUUID": uuid})
            return
        self.polls[uuid] += 1
        if self.polls[uuid] <= self.polls_before_done:
            data.append({"taskType": task["taskType"], "taskUUID": uuid, "status": "processing"})
            return
        data += self._results(uuid)

    def _results(self, uuid: str) -> list[dict[str, Any]]:
        task = self.tasks[uuid]
        kind, count = task["taskType"], task.get("numberResults", 1)
        self.billed[uuid] = COSTS[kind] * count
        url, name = (IMAGE, "image") if kind == "imageInference" else (VIDEO, "video")
        results = []
        for i in range(count):
            result = {
                "taskType": kind,
                "taskUUID": uuid,
                "status": "success",
                f"{name}UUID": f"{uuid[:8]}-result-{i}",
                f"{name}URL": url,
            }
            if task.get("includeCost") is True:
                result["cost"] = COSTS[kind]
            results.append(result)
        return results
