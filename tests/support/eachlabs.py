"""A fake EachLabs (api.eachlabs.ai), answering as EachLabs' API reference shows and the CE.SDK
plugins' EachLabs client reads: a create answers a fresh `predictionID`; a poll answers
`processing` `polls_before_done` times, then `success` with the output and `metrics.cost`; the
plugins' upload answers `{url}`; a cancel answers `cancelled`."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

HOST = "api.eachlabs.ai"
IMAGE = "https://storage.eachlabs.ai/predictions/out.png"
VIDEO = "https://storage.eachlabs.ai/predictions/out.mp4"
UPLOADED = "https://storage.eachlabs.ai/uploads/input.png"
COST = 0.039  # what the fake says a prediction cost (metrics.cost)


@dataclass
class FakeEachLabs:
    polls_before_done: int = 1
    created: list[str] = field(default_factory=list)
    polls: Counter[str] = field(default_factory=Counter)
    models: dict[str, str] = field(default_factory=dict)  # prediction id -> model

    def install(self, upstream: UpstreamServer) -> FakeEachLabs:
        upstream.route("POST", "/v1/prediction", self._create, host=HOST)
        upstream.route("GET", "/v1/prediction/", self._poll, host=HOST)
        upstream.route("POST", "/v1/prediction/", self._cancel, host=HOST)
        upstream.route("POST", "/api/v1/upload", self._upload, host=HOST)
        return self

    def _create(self, req: RecordedRequest, w: ResponseWriter) -> None:
        made = str(uuid.uuid4())
        self.created.append(made)
        self.models[made] = req.json()["model"]
        w.send_json({"status": "success", "message": "Prediction created", "predictionID": made})

    def _poll(self, req: RecordedRequest, w: ResponseWriter) -> None:
        made = req.path.rsplit("/", 1)[-1]
        if made not in self.models:
            w.send_json({"error": "Prediction not found"}, 404)
            return
        self.polls[made] += 1
        if self.polls[made] <= self.polls_before_done:
            w.send_json({"id": made, "status": "processing"})
            return
        output = VIDEO if "video" in self.models[made] else IMAGE
        metrics = {"predict_time": 1.5, "cost": COST}
        w.send_json({"id": made, "status": "success", "output": output, "metrics": metrics})

    def _cancel(self, req: RecordedRequest, w: ResponseWriter) -> None:
        made = req.path.split("/")[-2]
        w.send_json({"status": "cancelled", "message": "canceled", "predictionID": made})

    def _upload(self, req: RecordedRequest, w: ResponseWriter) -> None:
        assert (req.header("content-type") or "").startswith("multipart/form-data")
        w.send_json({"url": UPLOADED})
