"""Ownership on flows: remember who submitted a job, and let only them read or act on it.

`requestheaders` (after the guard has named the caller): a request naming a job not started
by this caller gets a 404 `unknown-job`, the same as an id keyrelay never saw, so the answer is
no oracle for which ids exist; nothing reaches the upstream. A submission is marked to be read
whole (`read_whole`), and `response` records its id before the answer reaches the client: the
client may poll at once, on another connection, through another instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http

from addon import flowstate
from addon.config.limits import BackendSpec
from addon.config.rules import Rules
from addon.jobs import kinds
from addon.jobs.owners import Owners, OwnersUnavailable, fingerprint, make_owners
from addon.problems import Refusal
from addon.redis_client import Every
from addon.resources import Generation
from addon.routing.router import Route

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two logs of the same kind of store failure


class Ownership:
    def __init__(self) -> None:
        self.owners: Owners | None = None
        self.backend = BackendSpec()
        self._submitted: dict[str, tuple[kinds.Kind, int]] = {}  # flow id -> (kind, ttl)
        self._log = Every(LOG_EVERY)

    def prepare(self, rules: Rules, live: Generation) -> Callable[[], None]:
        backend = rules.limits_backend
        owners = live.get(("job-owners", backend), lambda: make_owners(backend))

        def install() -> None:
            self.owners, self.backend = owners, backend

        return install

    async def requestheaders(self, flow: http.HTTPFlow, route: Route) -> Refusal | None:
        provider = route.provider
        kind = kinds.kind_of(route.host)
        if kind is None or not provider.ownership.active(provider.auth.mode):
            return None
        method, path = flow.request.method, route.path
        state = flowstate.of(flow)
        if kinds.submits(kind, method, path):
            self._submitted[flow.id] = (kind, provider.ownership.ttl)
            state["read_whole"] = True
            return None
        named = kinds.named_job(kind, path)
        if named is None:
            return None
        if named.id is None:
            return _unknown(provider.name)
        job = f"{kind}:{named.id}"
        state["job"] = job
        assert self.owners is not None
        try:
            owner = await self.owners.owner(job)
        except OwnersUnavailable as e:
            return self._unavailable(provider.name, e)
        if owner is None or owner != fingerprint(state.get("identity", "")):
            return _unknown(provider.name)
        return None

    async def response(self, flow: http.HTTPFlow) -> None:
        """The answer to a submission: remember its job's owner before the client sees it."""
        submitted = self._submitted.pop(flow.id, None)
        response = flow.response
        if submitted is None or response is None or not 200 <= response.status_code < 300:
            return
        kind, ttl = submitted
        job_id = kinds.id_in_answer(kind, response.content or b"", response.headers.get)
        if job_id is None:
            logger.warning("keyrelay: jobs: a %s submission was answered without an id", kind)
            return
        job = f"{kind}:{job_id}"
        state = flowstate.of(flow)
        state["job"] = job
        assert self.owners is not None
        try:
            await self.owners.remember(job, state.get("identity", ""), ttl)
        except OwnersUnavailable as e:
            # The job runs upstream anyway; its owner will get 404 (or 503) when reading it.
            if self._log(f"remember {e}"):
                logger.warning("keyrelay: jobs: could not record an owner (%s)", e)

    def error(self, flow: http.HTTPFlow) -> None:
        self._submitted.pop(flow.id, None)

    def _unavailable(self, provider: str, error: OwnersUnavailable) -> Refusal | None:
        if self._log(f"read {error}"):
            logger.warning(
                "keyrelay: jobs: the owner store failed (%s); failing %s",
                error,
                self.backend.on_error,
            )
        if self.backend.on_error == "open":
            return None
        return Refusal(503, "jobs-unavailable", f"{provider}: job owners cannot be checked now")


def _unknown(provider: str) -> Refusal:
    return Refusal(404, "unknown-job", f"{provider}: no job with this id was started by you")
