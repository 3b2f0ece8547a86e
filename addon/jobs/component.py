"""Ownership on flows: whatever a caller creates (a response, a file, a queued job) is theirs.

`requestheaders` (after the guard has named the caller): a request that names an object not
created by this caller gets a 404 `unknown-job`, the same as an id keyrelay never saw, so the
answer is no oracle for which ids exist; nothing reaches the upstream. A body that may name
objects (`previous_response_id`) is kept whole and looked into in `request`. A creating call's
answer is read whole, or, when it is an event stream, tapped as it passes; `response` records
the id (before a whole answer reaches the client: it may poll at once, on another connection,
through another instance). What names and creates objects is the profile's (addon/jobs/objects.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from addon import flowstate, header_index
from addon.caller import Caller
from addon.config.limits import BackendSpec
from addon.config.operations import ObjectSpec
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.flowlocal import FlowLocal
from addon.guard import body_rules, runware
from addon.guard.component import buffer_limit
from addon.jobs import objects
from addon.jobs.owners import Owners, OwnersUnavailable, fingerprint, make_owners
from addon.memo import Memo
from addon.problems import Refusal
from addon.redis_client import Every
from addon.resources import Generation
from addon.routing.router import Route
from addon.transport.component import add_stage, is_event_stream, keep_whole, read_answer_whole

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two logs of the same kind of store failure
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_REMEMBERED = 4096  # paths remembered at most...
_REMEMBERED_BYTES = 512  # ...each this long at most
_UNKNOWN: Any = object()


@dataclass(slots=True)
class _Call:
    provider: Provider
    identity: str
    creates: ObjectSpec | None = None
    reads_body: bool = False
    creates_if: str | None = None  # a creation that counts only when this body field is true
    tap: objects.StreamTap | None = None
    tasks: ObjectSpec | None = None  # a body of tasks (Runware): the UUIDs it names are this
    submitted: tuple[str, ...] = ()  # the keys of the tasks it submits: the caller's once taken


class Ownership:
    def __init__(self) -> None:
        self.owners: Owners | None = None
        self.backend = BackendSpec()
        self._calls: FlowLocal[_Call] = FlowLocal("jobs.calls")  # what is left to check or record
        # (provider, method, host, path) -> what it names; per rules load (install clears it)
        self._paths: Memo[tuple[str, str, str, str], tuple[objects.Named, ...] | None] = Memo(
            _REMEMBERED, _REMEMBERED_BYTES
        )
        self._log = Every(LOG_EVERY)

    def prepare(self, rules: Rules, live: Generation) -> Callable[[], None]:
        backend = rules.limits_backend
        owners = live.get(("job-owners", backend), lambda: make_owners(backend))

        def install() -> None:
            self.owners, self.backend = owners, backend
            self._paths.clear()

        return install

    async def requestheaders(
        self, flow: http.HTTPFlow, route: Route, caller: Caller
    ) -> Refusal | None:
        provider = route.provider
        catalogue = provider.catalogue
        if not catalogue.objects or not provider.ownership.active(provider.auth.mode):
            return None
        state, identity = flowstate.of(flow), caller.identity
        path, _, query = route.path.partition("?")
        in_path = self._in_path(provider, flow.request.method, route.host, path)
        if in_path is None:
            return _unknown(provider.name)
        named = [*in_path, *objects.in_query(catalogue, query)]
        if refusal := await self._check(provider, identity, named, state):
            return refusal
        operation = route.operation
        if provider.tasks is not None and operation and operation.creates:
            # The guard keeps the body whole; `request` reads the UUIDs its tasks name.
            spec = catalogue.objects[operation.creates]
            self._calls.set(flow, _Call(provider, identity, reads_body=True, tasks=spec))
            return None
        creates = catalogue.objects[operation.creates] if operation and operation.creates else None
        request = flow.request
        # A file's bytes name no object: an upload's body is not looked into.
        reads_body = (
            request.method not in _BODILESS
            and catalogue.body_ids is not None
            and (operation is None or operation.kind != "upload")
        )
        if reads_body:
            get_all = request.headers.get_all
            max_body = provider.validation.max_body
            if refusal := body_rules.prepare(max_body, request.method, get_all, buffer_limit()):
                return refusal
            keep_whole(flow)  # `request` looks into it before it goes
        creates_if = operation.creates_if if operation else None
        if creates_if is not None and not reads_body:
            creates = None  # no body that could say so: nothing is kept upstream
        if creates is not None or reads_body:
            self._calls.set(flow, _Call(provider, identity, creates, reads_body, creates_if))
        return None

    async def request(self, flow: http.HTTPFlow) -> Refusal | None:
        """A body that may name objects: every one it names must be the caller's."""
        call = self._calls.get(flow)
        if call is None or not call.reads_body or flow.response is not None:
            return None
        if flow.request.stream:
            logger.error("keyrelay: jobs: a body that needed checking was streamed")
            return Refusal(500, "internal-error", "the body could not be checked")
        request = flow.request
        body = request.raw_content or b""
        if call.tasks is not None:
            return await self._check_tasks(call, body, flowstate.of(flow))
        content_type = header_index.lookup(request.headers)("content-type") or ""
        try:
            named, data = objects.in_body(call.provider.catalogue, content_type, body)
        except objects.Invalid as e:
            return Refusal(400, "unreadable-body", f"the request body cannot be checked: {e}")
        flag = call.creates_if
        if flag is not None and not (isinstance(data, dict) and data.get(flag) is True):
            call.creates = None  # e.g. a chat completion not stored: no object to own
        return await self._check(call.provider, call.identity, named, flowstate.of(flow))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Before transport plans the answer: a creating call's answer is read whole, unless
        it is an event stream (then `tap` finds the id as the stream passes)."""
        call = self._calls.get(flow)
        response = flow.response
        if call is None or call.creates is None or response is None:
            return
        if 200 <= response.status_code < 300 and not is_event_stream(response.headers):
            read_answer_whole(flow)

    def tap(self, flow: http.HTTPFlow) -> None:
        """After transport decoded the stream: look for the created object's id in it."""
        call = self._calls.get(flow)
        response = flow.response
        if call is None or call.creates is None or response is None or not response.stream:
            return
        if 200 <= response.status_code < 300:
            call.tap = objects.StreamTap(call.creates)
            add_stage(response, "ids", call.tap)

    async def _check_tasks(
        self, call: _Call, body: bytes, state: flowstate.FlowState
    ) -> Refusal | None:
        """A task polled must be the caller's (else 404, as any object); a task submitted
        must not take a UUID someone else's task has (409)."""
        assert call.tasks is not None and call.provider.tasks is not None
        tasks = runware.read(body)
        if isinstance(tasks, Refusal):  # the guard read it already
            return tasks
        form, spec = call.provider.tasks, call.tasks
        polled = [
            objects.Named(spec, runware.uuid_of(t)) for t in tasks if t[runware.TYPE] == form.poll
        ]
        if refusal := await self._check(call.provider, call.identity, polled, state):
            return refusal
        submitted = [spec.key(runware.uuid_of(t)) for t in tasks if t[runware.TYPE] in form.submit]
        assert self.owners is not None
        mine = fingerprint(call.identity)
        for key in submitted:
            state["job"] = key
            try:
                owner = await self.owners.owner(key)
            except OwnersUnavailable as e:
                if refusal := self._unavailable(call.provider.name, e):
                    return refusal
                continue
            if owner not in (None, mine):
                return Refusal(
                    409,
                    "task-exists",
                    f"{call.provider.name}: a task with this taskUUID exists: make a new UUID",
                )
        call.submitted = tuple(submitted)
        return None

    async def response(self, flow: http.HTTPFlow) -> None:
        """Record a created object's owner (before a whole answer reaches the client)."""
        call = self._calls.pop(flow)
        response = flow.response
        if call is not None and call.submitted and response and 200 <= response.status_code < 300:
            # The client chose the ids: they are its once Runware took the tasks.
            for key in call.submitted:
                await self._remember(flow, call, key)
            return
        if call is None or call.creates is None or response is None:
            return
        if not 200 <= response.status_code < 300:
            return
        spec = call.creates
        if call.tap is not None:
            object_id = call.tap.id
        else:
            body = header_index.content(response) or b""
            object_id = objects.id_in_answer(spec, body, header_index.lookup(response.headers))
        if object_id is None:
            logger.warning("keyrelay: jobs: a %s was created without an id we know", spec.name)
            return
        await self._remember(flow, call, spec.key(object_id))

    async def _remember(self, flow: http.HTTPFlow, call: _Call, key: str) -> None:
        flowstate.of(flow)["job"] = key
        assert self.owners is not None
        try:
            await self.owners.remember(key, call.identity, call.provider.ownership.ttl)
        except OwnersUnavailable as e:
            # The object exists upstream anyway; its owner will get 404 (or 503) reading it.
            if self._log(f"remember {e}"):
                logger.warning("keyrelay: jobs: could not record an owner (%s)", e)

    def error(self, flow: http.HTTPFlow) -> None:
        self._calls.pop(flow)

    def _in_path(
        self, provider: Provider, method: str, host: str, path: str
    ) -> tuple[objects.Named, ...] | None:
        """What a path names (None: not an id where one must be), remembered: clients poll
        the same few paths over and over."""
        key = (provider.name, method, host, path)
        if (known := self._paths.get(key, _UNKNOWN)) is not _UNKNOWN:
            return known
        try:
            named: tuple[objects.Named, ...] | None = objects.in_path(
                provider.catalogue, method, host, path
            )
        except objects.Invalid:
            named = None
        self._paths.remember(key, named, len(path))
        return named

    async def _check(
        self,
        provider: Provider,
        identity: str,
        named: list[objects.Named],
        state: flowstate.FlowState,
    ) -> Refusal | None:
        assert self.owners is not None
        mine = fingerprint(identity)
        for each in named:
            state["job"] = each.key
            try:
                owner = await self.owners.owner(each.key)
            except OwnersUnavailable as e:
                if refusal := self._unavailable(provider.name, e):
                    return refusal
                continue
            if owner != mine:
                return _unknown(provider.name)
        return None

    def _unavailable(self, provider: str, error: OwnersUnavailable) -> Refusal | None:
        if self._log(f"read {error}"):
            logger.warning(
                "keyrelay: jobs: the owner store failed (%s); failing %s",
                error,
                self.backend.on_error,
            )
        if self.backend.on_error == "open":
            return None
        return Refusal(503, "jobs-unavailable", f"{provider}: object owners cannot be checked now")


def _unknown(provider: str) -> Refusal:
    return Refusal(404, "unknown-job", f"{provider}: no object with this id was created by you")
