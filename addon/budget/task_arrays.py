"""Arrays of tasks (Runware): each task reserved, held and charged on its own.

A submit reserves every task's worst case under the flow's lease; the answer's tasks that bring
their cost are charged it, the others' shares are held each under its task's own lease
(`books.divide`) until the poll that brings its cost settles it. keyrelay asks for every task's
cost and takes it out of the answer of a client that did not ask. Budget (component.py) takes
these steps from this class; what they share is the budget's (`books`, `owners`, `_take`).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from mitmproxy import http

from addon import flowstate, header_index, tasks
from addon.budget import jobs, refusals
from addon.budget.alerts_watch import AlertWatch
from addon.budget.books import Account, BudgetStore, Lease
from addon.budget.calls import Call, Tasks, asked_key, retrying
from addon.config.operations import ObjectSpec
from addon.config.provider import Provider
from addon.flowlocal import FlowLocal
from addon.guard import runware
from addon.jobs.owners import Owners, OwnersUnavailable, fingerprint
from addon.metering import prices
from addon.metering import runware as task_costs
from addon.metering.usage import UNITS
from addon.problems import Refusal
from addon.transport.component import read_answer_whole


class TaskArrays:
    """The budget's steps for arrays of tasks. What they use of the budget is declared here
    and defined by Budget, which takes these steps from this class."""

    books: BudgetStore | None
    owners: Owners | None
    alerts: AlertWatch | None
    ask_for_usage: bool
    _calls: FlowLocal[Call]

    def limited(self, provider: Provider) -> bool:
        raise NotImplementedError  # Budget's

    def accounts(self, identity: str, provider: Provider, now: datetime) -> tuple[Account, ...]:
        raise NotImplementedError  # Budget's

    async def _take(
        self, flow: http.HTTPFlow, call: Call, amount: int, now: datetime
    ) -> Refusal | None:
        raise NotImplementedError  # Budget's

    async def _tasks(self, flow: http.HTTPFlow, call: Call) -> Refusal | None:
        """An array of tasks (Runware): under a budget each submitted task reserves its worst
        case (a model without a price: 403 unpriced); keyrelay asks for every task's cost and
        notes whose client asked, to hand each client the answer it would have got."""
        provider, operation, request = call.provider, call.operation, flow.request
        form = provider.tasks
        assert form is not None
        if self.books is None or operation is None or operation.creates is None:
            return None  # nothing metered
        body = request.raw_content or b""
        tasks = runware.read(body)  # the guard checked it
        if isinstance(tasks, Refusal):
            self._calls.pop(flow)
            return tasks
        # Nano-dollars each submitted task reserves: nothing, without a budget.
        worst = {runware.uuid_of(t): 0 for t in tasks if t[runware.TYPE] in form.submit}
        if self.limited(provider):
            priced = task_costs.worst_cases(tasks, form, provider.prices)
            if isinstance(priced, str):
                self._calls.pop(flow)
                return refusals.unpriced(provider.name, operation.name, priced)
            worst = priced
        spec = provider.catalogue.objects[operation.creates]
        polled = [runware.uuid_of(t) for t in tasks if t[runware.TYPE] == form.poll]
        asked = frozenset[str]()
        if self.ask_for_usage:
            asked = task_costs.ask_costs(tasks, form)
            call.client_body, request.content = body, runware.encode(tasks)
        model = next((t.get("model") for t in tasks if t[runware.TYPE] in form.submit), None)
        shown = await self._asked(spec, call.identity, polled)
        call.tasks = Tasks(
            spec, worst, asked | shown, asked, model if isinstance(model, str) else None
        )
        call.accounts = self.accounts(call.identity, provider, datetime.now(UTC))
        read_answer_whole(flow)  # its costs are read, and taken out, before it goes
        if not any(worst.values()):
            return None
        return await self._take(flow, call, sum(worst.values()), datetime.now(UTC))

    async def _asked(self, spec: ObjectSpec, identity: str, polled: list[str]) -> frozenset[str]:
        """The polled tasks whose submitter asked for their cost (noted when submitted)."""
        if not polled or self.owners is None:
            return frozenset()
        mine, shown = fingerprint(identity), set()
        for uuid in polled:
            try:
                if await self.owners.owner(asked_key(spec, uuid)) == mine:
                    shown.add(uuid)
            except OwnersUnavailable:
                pass  # not shown: the figure is keyrelay's, the answer is whole without it
        return frozenset(shown)

    def _settle_tasks(self, flow: http.HTTPFlow, call: Call, work: Tasks) -> None:
        """Each task's cost, as the answer says it: a submitted task that reports none yet
        (async delivery) holds its reservation until a poll brings its cost; a polled task's
        cost settles its hold. The client gets the answer without costs it did not ask for."""
        response = flow.response
        answered = response is not None and 200 <= response.status_code < 300
        body = b"" if response is None or response.stream else header_index.content(response)
        answer = task_costs.read_answer(body or b"", work.shown)
        if answer.body is not None and response is not None:
            response.content = answer.body
        if call.client_body is not None:
            flow.request.content = call.client_body  # saved flows show what the client sent
        now = sum(c for uuid, c in answer.costs.items() if uuid in work.reserved)
        later = {uuid: c for uuid, c in answer.costs.items() if uuid not in work.reserved}
        held: tuple[tuple[Lease, int], ...] = ()
        if answered and call.lease == flow.id:
            held = tuple(
                (Lease(work.lease(uuid), jobs.JOB_HOLD, charge=True), amount)
                for uuid, amount in work.reserved.items()
                if amount and uuid not in answer.costs and uuid not in answer.failed
            )
        state = flowstate.of(flow)
        state["usage"] = {UNITS: answer.results}
        state["cost"] = prices.usd(now + sum(later.values()))
        state["model"] = (work.model or "-")[:100]
        if held:
            state["charged"] = "held"
        if call.accounts:
            tasks.spawn(self._book_tasks(call, work, held, now, later, answered))

    async def _book_tasks(
        self,
        call: Call,
        work: Tasks,
        held: tuple[tuple[Lease, int], ...],
        now: int,
        later: dict[str, int],
        answered: bool,
    ) -> None:
        """The books: the flow's reservation divided among the tasks it holds for (the rest
        released) and what this answer reported charged; each polled task's hold settled."""
        assert self.books is not None
        books, name, accounts = self.books, call.provider.name, call.accounts
        lease = call.lease
        if held and lease is not None:
            divided = lease
            await retrying(lambda: books.divide(accounts, divided, held))
            lease = None
        if now or lease is not None:
            spent, flow_lease = now, lease
            await retrying(lambda: books.settle(accounts, name, flow_lease, spent))
        for uuid, cost in later.items():
            job = work.lease(uuid)
            await retrying(lambda: books.settle(accounts, name, job, cost))  # noqa: B023
        await self._alert(call, now + sum(later.values()))
        if answered:
            await self._note_asked(call, work)

    async def _alert(self, call: Call, spent: int) -> None:
        """After a charge reached the books: the spend alerts it raises (alerts_watch.py)."""
        if self.alerts is not None and self.books is not None and spent:
            await self.alerts.settled(
                self.books, call.identity, call.provider.name, call.accounts, spent
            )

    async def _note_asked(self, call: Call, work: Tasks) -> None:
        """The submitted tasks whose client asked for the cost: their polls show it."""
        if self.owners is None:
            return
        for uuid in work.asked:
            with contextlib.suppress(OwnersUnavailable):  # its polls then take the figure out
                await self.owners.remember(
                    asked_key(work.spec, uuid), call.identity, call.provider.ownership.ttl
                )
