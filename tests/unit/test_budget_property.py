"""Property: money that holds. Budgets against providers that bill as they document.

Random request shapes over every profile's priced operations (OpenAI chat completions, the
Responses API, images and speech; Anthropic messages; ElevenLabs text to speech; fal queue
submits with their results fetched later, and fal.run) go through the Budget's hooks as
mitmproxy calls them, against a fake provider (tests/support/billing.py) that decides what it
bills from its own price list and answers with the bytes the provider would send. Each round
has several identities, each sending batches whose requests are all reserved before any is
answered, from one or two tabs at once; streams are passed on in random chunks, interleaved
with other calls, and cut anywhere. Properties:

1. for every request (a fal job: its submit and every fetch of it), what keyrelay charged is
   at least what the provider billed;
2. per identity, what the provider billed for it stays within its budgets (all providers, and
   each provider's own share);
3. once everything settled, the books hold no reservation, and what they say was spent is the
   sum of the charges.

KEYRELAY_PROPERTY_ROUNDS (default 20) sets the rounds per family, KEYRELAY_PROPERTY_SEED (23)
the seed. A failure lists each kind of violation found (the property, the operation, how the
exchange went), how often, the features of its cases (rare-text, no-cap, thinking, tools...)
and its simplest case: the round, the identity and the request shape, which the seed replays.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from mitmproxy import flow as mitmflow
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support import billing
from support.billing import Answer, Job, Upstream

from addon import flowstate
from addon.budget.books import account_key, periods
from addon.budget.component import Budget
from addon.caller import Caller as AddonCaller
from addon.config.rules import Rules, load
from addon.problems import Refusal
from addon.resources import Resources
from addon.routing.router import Route, Router

SEED = int(os.environ.get("KEYRELAY_PROPERTY_SEED", "23"))
ROUNDS = int(os.environ.get("KEYRELAY_PROPERTY_ROUNDS", "20"))
NANO = 10**9
# Small enough that most identities run out within a round.
BUDGET = {"daily": "0.30", "monthly": "2.00"}  # USD per identity, all providers together
SHARES = {"openai": "0.10", "anthropic": "0.05", "elevenlabs": "0.08", "fal": "0.25"}  # a day
FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "openai": (("chat", 4), ("responses", 3), ("images", 1.5), ("speech", 1.5)),
    "anthropic": (("messages", 1),),
    "elevenlabs": (("tts", 1),),
    "fal": (("fal.submit", 3), ("fal.run", 1)),
}
FAMILIES["mixed"] = tuple(op for ops in FAMILIES.values() for op in ops)
SHOWN = 12  # kinds of violation a failure lists


def rules_text() -> str:
    prices = billing.rules_prices()
    providers: dict[str, Any] = {name: {"prices": prices[name]} for name in prices}
    for name, daily in SHARES.items():
        providers[name]["budget"] = {"daily": float(daily)}
    budget = {period: float(usd) for period, usd in BUDGET.items()}
    return yaml.safe_dump({"budget": budget, "providers": providers}, sort_keys=False)


# -- request shapes ---------------------------------------------------------------------------


@dataclass
class Shape:
    """One request as a client sends it, and how its exchange goes."""

    op: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    target: str | None = None  # fal: the x-fal-target-url
    stream: bool = False  # the answer comes as a stream (events, or chunked audio)
    outcome: str = "complete"  # client-left, upstream-ended (streams), left-early, error
    cut: float = 1.0  # the share of a stream's bytes passed on before it stopped
    says_usage: bool = True  # the answer names its usage (where the provider may omit it)
    tags: list[str] = field(default_factory=list)
    job: Job | None = None

    def kind(self) -> str:
        """What a violation is filed under: the operation, and how its exchange went."""
        return f"{self.op}, {self.outcome}{', streamed' if self.stream else ''}"

    def features(self) -> list[str]:
        """What else may explain it."""
        return [*self.tags, *([] if self.says_usage else ["no-usage"])]

    def describe(self) -> str:
        seen = {
            "op": self.op,
            "url": self.target or self.path,
            "body": _abridged(self.body),
            "stream": self.stream,
            "outcome": self.outcome,
            "cut": round(self.cut, 3),
            "says_usage": self.says_usage,
        }
        if self.job:
            seen["job_units"] = self.job.units
        return json.dumps(seen)


def _abridged(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 40:
        rare = any(c in billing.RARE_SET for c in value[:8])
        return f"<{len(value)} chars{', rare' if rare else ''}>"
    if isinstance(value, dict):
        return {k: _abridged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_abridged(v) for v in value]
    return value


def _count(rng: random.Random, most: int) -> int:
    """1..most, log-uniform: small and large counts alike."""
    return max(1, min(most, round(math.exp(rng.uniform(0, math.log(most))))))


def draw(rng: random.Random, op: str, upstream: Upstream) -> Shape:
    tags: list[str] = []
    alphabet = "ascii"
    if op in ("chat", "responses", "messages") and rng.random() < 0.2:
        alphabet = "rare"
        tags.append("rare-text")

    def prose(most: int) -> str:
        return billing.text(rng, alphabet, _count(rng, most))

    if op == "chat":
        body: dict[str, Any] = {"model": rng.choice(billing.CHAT_MODELS)}
        turns = rng.choice((1, 1, 3))
        body["messages"] = [
            {"role": ("user", "assistant")[i % 2], "content": prose(3000)} for i in range(turns)
        ]
        if rng.random() < 0.3:
            body["messages"].insert(0, {"role": "system", "content": prose(500)})
        _cap(rng, body, ("max_tokens", "max_completion_tokens"), 4000, tags)
        if rng.random() < 0.3:
            body["n"] = rng.randint(2, 3)
            tags.append("n>1")
        stream = rng.random() < 0.6
        if stream:
            body["stream"] = True
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        return _answered(rng, Shape(op, "POST", "/api/openai/chat/completions", body, tags=tags))
    if op == "responses":
        body = {"model": rng.choice(billing.RESPONSES_MODELS)}
        if rng.random() < 0.5:
            body["input"] = prose(3000)
        else:
            body["input"] = [{"role": "user", "content": prose(3000)}]
        if rng.random() < 0.3:
            body["instructions"] = prose(400)
        _cap(rng, body, ("max_output_tokens",), 4000, tags)
        if rng.random() < 0.6:
            body["stream"] = True
        return _answered(rng, Shape(op, "POST", "/api/openai/responses", body, tags=tags))
    if op == "images":
        model = rng.choice(billing.IMAGE_MODELS)
        body = {"model": model, "prompt": prose(300), "size": "1024x1024"}
        body["n"] = rng.choice((1, 1, 2)) if model == "dall-e-3" else rng.randint(1, 4)
        shape = Shape(op, "POST", "/api/openai/images/generations", body)
        return _answered(rng, shape, may_omit=False)  # the images are the usage
    if op == "speech":
        body = {"model": rng.choice(billing.SPEECH_MODELS), "input": prose(4096), "voice": "alloy"}
        shape = Shape(op, "POST", "/api/openai/audio/speech", body, stream=rng.random() < 0.5)
        return _answered(rng, shape, may_omit=False)  # speech never names its usage
    if op == "messages":
        return _answered(rng, _claude(rng, prose, tags))
    if op == "tts":
        suffix = rng.choice(("", "/stream", "/with-timestamps", "/stream/with-timestamps"))
        body = {"text": billing.text(rng, "ascii", _count(rng, 600))}
        if model_id := rng.choice((None, "eleven_multilingual_v2", "eleven_flash_v2_5")):
            body["model_id"] = model_id
        path = f"/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM{suffix}"
        return _answered(rng, Shape(op, "POST", path, body, stream="/stream" in suffix))
    # fal: a queue submit, or a synchronous run; the job decides the units it will bill.
    app = rng.choice(sorted(billing.FAL_APPS))
    host = "queue.fal.run" if op == "fal.submit" else "fal.run"
    body = {"prompt": prose(200), "num_images": rng.randint(1, 2)}
    target = f"https://{host}/{app}/{rng.choice(billing.FAL_APPS[app])}"
    shape = Shape(op, "POST", "/api/fal/proxy", body, target=target, job=upstream.job(app))
    if op == "fal.run":
        shape.says_usage = rng.random() < 0.9
    return shape


def _cap(
    rng: random.Random, body: dict[str, Any], names: tuple[str, ...], most: int, tags: list[str]
) -> None:
    """A token cap under one of its names, or (a fifth of the time) none."""
    if rng.random() < 0.2:
        tags.append("no-cap")
    else:
        body[rng.choice(names)] = _count(rng, most)


def _claude(rng: random.Random, prose: Callable[[int], str], tags: list[str]) -> Shape:
    body: dict[str, Any] = {"model": rng.choice(billing.CLAUDE_MODELS)}
    if rng.random() < 0.2:
        body["max_tokens"] = rng.randint(1025, 4096)
        body["thinking"] = {"type": "enabled", "budget_tokens": rng.randint(1024, 1024 * 3)}
        body["thinking"]["budget_tokens"] = min(
            body["thinking"]["budget_tokens"], body["max_tokens"] - 1
        )
        tags.append("thinking")
    else:
        body["max_tokens"] = _count(rng, 4096)
    pick = rng.random()
    if pick < 0.3:
        body["system"] = prose(800)
    elif pick < 0.5:
        body["system"] = [
            {"type": "text", "text": prose(3000), "cache_control": {"type": "ephemeral"}}
        ]
        tags.append("cached-prefix")
    turns = rng.choice((1, 1, 3))
    body["messages"] = [
        {
            "role": ("user", "assistant")[i % 2],
            "content": prose(3000)
            if rng.random() < 0.5
            else [{"type": "text", "text": prose(3000)}],
        }
        for i in range(turns)
    ]
    if rng.random() < 0.25:
        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        body["tools"] = [{"name": "get_weather", "description": "weather", "input_schema": schema}]
        tags.append("tools")
    if rng.random() < 0.6:
        body["stream"] = True
    return Shape("messages", "POST", "/api/anthropic/v1/messages", body, tags=tags)


def _answered(rng: random.Random, shape: Shape, *, may_omit: bool = True) -> Shape:
    """How the exchange goes: an upstream error, a client that leaves before the answer, a
    stream cut by the client or ended early by the upstream, an answer without its usage
    (`may_omit`: where the provider may leave it out of a whole answer, or its head)."""
    if shape.body and shape.body.get("stream"):
        shape.stream = True
    pick = rng.random()
    if pick < 0.05:
        shape.outcome = "error"
    elif pick < 0.1:
        shape.outcome = "left-early"
    elif shape.stream and pick < 0.4:
        shape.outcome, shape.cut = "client-left", rng.random()
    elif shape.stream and pick < 0.5:
        shape.outcome, shape.cut = "upstream-ended", rng.random()
    text_stream = shape.stream and shape.op in ("chat", "responses", "messages")
    if may_omit and not text_stream:  # a stream's usage is in its events: it ends early instead
        shape.says_usage = rng.random() < 0.85
    return shape


def fetch(rng: random.Random, job: Job) -> Shape:
    """The next call its caller makes about a fal job: a premature result, a poll, the result."""
    base = f"https://queue.fal.run/{job.app}/requests/{job.id}"
    if job.early:
        job.early = False
        return Shape("fal.early", "GET", "/api/fal/proxy", target=base, job=job)
    if rng.random() < 0.3:
        return Shape("fal.status", "GET", "/api/fal/proxy", target=f"{base}/status", job=job)
    shape = Shape("fal.result", "GET", "/api/fal/proxy", target=base, job=job)
    shape.says_usage = rng.random() < 0.9
    return shape


# -- driving the hooks ------------------------------------------------------------------------


@dataclass
class Bill:
    """What the provider billed for a request (a fal job: at its submit), and every flow keyrelay
    may have charged it to (a fal job: its submit and each fetch of it)."""

    shape: Shape
    provider: str
    usd: Fraction
    flows: list[http.HTTPFlow]


@dataclass
class Caller:
    identity: str
    plans: list[Shape]
    jobs: list[tuple[Job, Bill]] = field(default_factory=list)  # submitted, result not fetched
    bills: list[Bill] = field(default_factory=list)
    flows: list[tuple[str, http.HTTPFlow]] = field(default_factory=list)  # provider, every flow


def charged(flow: http.HTTPFlow) -> int:
    """What keyrelay charged for a flow, nano-dollars (the state holds USD to 9 places)."""
    return round(flowstate.of(flow).get("cost", 0.0) * NANO)


class Round:
    def __init__(self, loaded: Rules, router: Router, family: str, index: int) -> None:
        self.name = f"{family} round {index}"
        self.rng = random.Random(f"{SEED}/{family}/{index}")
        # A third of the rounds, the provider bills near every request's worst case: what
        # slips past a reservation (concurrency included) then shows as spend over a budget.
        self.upstream = Upstream(self.rng, greed=self.rng.choice((0.3, 0.3, 0.9)))
        self.refused: dict[str, int] = {}  # problem type -> requests refused
        self.router = router
        self.family = family
        self.budget = Budget()
        with Resources().reload() as live:
            install = self.budget.prepare(loaded, live)
        install()

    async def run(self) -> list[Caller]:
        rng, ops = self.rng, FAMILIES[self.family]
        callers = []
        for i in range(rng.randint(2, 4)):
            chosen = rng.choices([op for op, _ in ops], [w for _, w in ops], k=rng.randint(6, 24))
            plans = [draw(rng, op, self.upstream) for op in chosen]
            callers.append(Caller(f"token:{self.family}-{i}", plans))
        tabs = [self.client(c) for c in callers for _ in range(rng.randint(1, 2))]
        await asyncio.gather(*tabs)
        await _settled(self.budget)
        return callers

    async def client(self, caller: Caller) -> None:
        rng = self.rng
        while caller.plans or caller.jobs:
            batch: list[tuple[Shape, Bill | None]] = []
            for _ in range(rng.randint(1, 4)):
                if caller.jobs and (not caller.plans or rng.random() < 0.4):
                    job, bill = caller.jobs.pop(rng.randrange(len(caller.jobs)))
                    batch.append((fetch(rng, job), bill))
                elif caller.plans:
                    batch.append((caller.plans.pop(), None))
            flows = [self.flow(shape, caller) for shape, _ in batch]
            heads = [
                self.budget.requestheaders(flow, route, AddonCaller(caller.identity))
                for flow, route in flows
            ]
            for (flow, route), head in zip(flows, heads, strict=True):
                if head is None:
                    forward(flow, route)
            # Every request of the batch is reserved before any is answered.
            refusals = await asyncio.gather(
                *(
                    _refused(head) if head else self.budget.request(flow)
                    for (flow, _), head in zip(flows, heads, strict=True)
                )
            )
            for refusal in refusals:
                if refusal is not None:
                    self.refused[refusal.reason] = self.refused.get(refusal.reason, 0) + 1
            await asyncio.gather(
                *(
                    self.exchange(caller, shape, bill, flow, route)
                    for (shape, bill), (flow, route), refusal in zip(
                        batch, flows, refusals, strict=True
                    )
                    if refusal is None
                )
            )

    def flow(self, shape: Shape, caller: Caller) -> tuple[http.HTTPFlow, Route]:
        flow = tflow.tflow()
        request = flow.request
        request.method, request.path = shape.method, shape.path
        request.headers.clear()
        if shape.target:
            request.headers["x-fal-target-url"] = shape.target
        if shape.body is not None:
            request.headers["content-type"] = "application/json"
            request.content = json.dumps(shape.body).encode()
        else:
            request.content = b""
        route = self.router.route(shape.method, shape.path, request.headers.get)
        assert isinstance(route, Route), (route, shape.describe())
        state = flowstate.of(flow)  # what routing and the guard record before the budget
        state["provider"], state["identity"] = route.provider.name, caller.identity
        flow.response = None
        caller.flows.append((route.provider.name, flow))
        return flow, route

    async def exchange(
        self, caller: Caller, shape: Shape, bill: Bill | None, flow: http.HTTPFlow, route: Route
    ) -> None:
        """The provider answers what keyrelay forwarded; the client reads it, or leaves."""
        rng, budget = self.rng, self.budget
        forwarded = json.loads(flow.request.content or b"null")  # keyrelay may have rewritten it
        if shape.outcome == "error":
            answer = self.upstream.error(rng.choice((429, 500, 529)))
        else:
            answer = self.upstream.answer(
                shape.op,
                forwarded,
                path=shape.path,
                stream=shape.stream,
                says_usage=shape.says_usage,
                job=shape.job,
            )
        if shape.outcome == "left-early":  # a whole answer was made; a stream, its start
            flow.error = mitmflow.Error("client disconnected")
            budget.error(flow)
            sent = 0
        else:
            sent = await self.deliver(flow, shape, answer)
        usd = answer.bill(sent)
        provider = route.provider.name
        if bill is not None:  # a fetch of a fal job: part of what pays for the job
            assert shape.job is not None
            bill.flows.append(flow)
            if shape.op == "fal.early":
                bill.shape.tags.append("result-fetched-early")
            elif shape.op == "fal.result" and not shape.says_usage:
                bill.shape.tags.append("result-without-units")
            if shape.op != "fal.result":
                caller.jobs.append((shape.job, bill))
            return
        bill = Bill(shape, provider, usd, [flow])
        caller.bills.append(bill)
        if shape.op == "fal.submit" and answer.status == 200:
            assert shape.job is not None
            caller.jobs.append((shape.job, bill))

    async def deliver(self, flow: http.HTTPFlow, shape: Shape, answer: Answer) -> int:
        """Hooks for the answer; a stream passed on in random chunks, letting other calls run
        between them, and stopped where the shape says. The bytes that went out."""
        rng, budget = self.rng, self.budget
        headers = [(k.encode(), v.encode()) for k, v in answer.headers]
        response = http.Response.make(
            answer.status, b"" if answer.streamed else answer.body, headers
        )
        if answer.streamed:
            response.headers.pop("content-length", None)
            response.stream = True
        flow.response = response
        budget.responseheaders(flow)
        if not answer.streamed:
            budget.response(flow)
            return len(answer.body)
        end = len(answer.body) if shape.outcome == "complete" else int(shape.cut * len(answer.body))
        stage, sent = response.stream, 0
        while sent < end:
            step = min(end - sent, rng.randint(1, 512))
            if callable(stage):
                stage(answer.body[sent : sent + step])
            sent += step
            if rng.random() < 0.25:
                await asyncio.sleep(0)
        if shape.outcome == "client-left":
            flow.error = mitmflow.Error("client disconnected")
            budget.error(flow)
        else:
            if callable(stage):
                stage(b"")
            budget.response(flow)
        return sent


def forward(flow: http.HTTPFlow, route: Route) -> None:
    """What routing does to an admitted request before its body is read: it names its upstream
    (the budget finds a fal result's job in the upstream path)."""
    request = flow.request
    request.scheme, request.host, request.port = route.scheme, route.host, route.port
    request.path = route.path


async def _refused(refusal: Refusal) -> Refusal:
    return refusal


async def _settled(budget: Budget) -> None:
    """Let the spawned settlements write the books (the lease renewer sleeps on: not waited for)."""
    for _ in range(1000):
        running = {asyncio.current_task(), getattr(budget, "_renewing", None)}
        if all(t in running for t in asyncio.all_tasks()):
            return
        await asyncio.sleep(0)


# -- the properties -----------------------------------------------------------------------------


@dataclass
class Case:
    features: list[str]  # the shape's (or shapes') notable features
    text: str  # where (seed, round, identity), the figures, the shape


Found = dict[str, list[Case]]  # kind of violation -> its cases


def _usd(amount: Fraction) -> str:
    return f"${float(amount):.9f}"


def charges_cover_bills(where: str, caller: Caller, found: Found) -> list[Bill]:
    """Property 1; the bills charged less than billed."""
    short = []
    for bill in caller.bills:
        paid = sum(charged(flow) for flow in bill.flows)
        if paid + 1 < bill.usd * NANO:  # 1 nano-dollar of rounding
            short.append(bill)
            found.setdefault(f"charged < billed: {bill.shape.kind()}", []).append(
                Case(
                    bill.shape.features(),
                    f"{where}, {caller.identity}: billed {_usd(bill.usd)}, charged "
                    f"{_usd(Fraction(paid, NANO))}; {bill.shape.describe()}",
                )
            )
    return short


def bills_within_budgets(where: str, caller: Caller, short: list[Bill], found: Found) -> None:
    """Property 2, against the budget of all providers and each provider's own."""
    whole = min(Fraction(usd) for usd in BUDGET.values())
    limits = {"all providers": whole}
    limits.update({name: min(whole, Fraction(usd)) for name, usd in SHARES.items()})
    for scope, limit in limits.items():
        bills = [b for b in caller.bills if scope in ("all providers", b.provider)]
        billed = sum((b.usd for b in bills), Fraction(0))
        if billed <= limit + Fraction(len(bills), NANO):
            continue
        paid = Fraction(sum(charged(f) for b in bills for f in b.flows), NANO)
        # Under-charged calls explain it, or calls charged more than they reserved (which the
        # hooks do not show): among them, those with the features listed.
        causes = sorted({f"{b.shape.op}: {b.shape.outcome}" for b in short if b in bills})
        features = {feature for b in bills for feature in b.shape.features()}
        found.setdefault(f"billed over the budget: {scope}", []).append(
            Case(
                sorted(features) + (causes or ["no call under-charged"]),
                f"{where}, {caller.identity}: billed {_usd(billed)}, charged {_usd(paid)}, "
                f"budget ${float(limit)}; under-charged: {causes or 'none'}; "
                f"by operation: {_by_operation(bills)}",
            )
        )


def _by_operation(bills: list[Bill]) -> str:
    rows: dict[str, tuple[int, Fraction, Fraction]] = {}
    for bill in bills:
        n, usd, paid = rows.get(bill.shape.op, (0, Fraction(0), Fraction(0)))
        paid += Fraction(sum(charged(flow) for flow in bill.flows), NANO)
        rows[bill.shape.op] = (n + 1, usd + bill.usd, paid)
    return "; ".join(
        f"{op} x{n} billed {_usd(usd)} charged {_usd(paid)}" for op, (n, usd, paid) in rows.items()
    )


async def books_balance(where: str, budget: Budget, callers: list[Caller], found: Found) -> None:
    """Property 3: nothing still reserved; spent (in all and per provider) = the charges."""
    assert budget.books is not None
    now = datetime.now(UTC)
    for caller in callers:
        keys = tuple(account_key(caller.identity, period) for period in periods(now))
        spent: dict[str, int] = {"": 0}
        for provider, flow in caller.flows:
            spent[""] += charged(flow)
            spent[provider] = spent.get(provider, 0) + charged(flow)
        for key, fields in zip(keys, await budget.books.read(keys), strict=True):
            held = {name: n for name, n in fields.items() if name.startswith("reserved") and n}
            if held:
                found.setdefault("the books still hold a reservation", []).append(
                    Case([], f"{where}, {caller.identity}, {key}: {held}")
                )
            for provider, total in spent.items():
                name = f"spent:{provider}" if provider else "spent"
                if fields.get(name, 0) != total:
                    found.setdefault(f"the books' {name} is not the sum of the charges", []).append(
                        Case(
                            [],
                            f"{where}, {caller.identity}, {key}: {fields.get(name, 0)} != {total}",
                        )
                    )


def report(family: str, found: Found) -> str:
    """Each kind of violation: how often, the features of its cases, and its simplest case."""
    kinds = sorted(found.items(), key=lambda item: -len(item[1]))
    lines = [
        f"{len(found)} kinds of violation in {ROUNDS} rounds of {family!r} "
        f"(KEYRELAY_PROPERTY_SEED={SEED}):"
    ]
    for kind, cases in kinds[:SHOWN]:
        counts: dict[str, int] = {}
        for case in cases:
            for feature in case.features or ["-"]:
                counts[feature] = counts.get(feature, 0) + 1
        spread = ", ".join(f"{f} {n}" for f, n in sorted(counts.items(), key=lambda i: -i[1]))
        simplest = min(cases, key=lambda case: len(case.features))
        shown = f" ({', '.join(simplest.features)})" if simplest.features else ""
        lines.append(f"- {kind} (x{len(cases)}; {spread})\n    e.g.{shown} {simplest.text}")
    if len(kinds) > SHOWN:
        lines.append(f"... and {len(kinds) - SHOWN} more kinds")
    return "\n".join(lines)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def within_mitmproxy() -> None:
        with taddons.context():
            await scenario()

    asyncio.run(within_mitmproxy())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_what_keyrelay_charges_covers_what_providers_bill(tmp_path: Path, family: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text())
    loaded = load(path, {})
    router = Router(loaded)
    found: Found = {}
    calls = 0
    refused: dict[str, int] = {}

    async def scenario() -> None:
        nonlocal calls
        for index in range(ROUNDS):
            day = periods(datetime.now(UTC))
            trial = Round(loaded, router, family, index)
            callers = await trial.run()
            calls += sum(len(c.flows) for c in callers)
            for reason, n in trial.refused.items():
                refused[reason] = refused.get(reason, 0) + n
            # Across midnight a day has two budgets and two accounts: only property 1 holds.
            same_day = periods(datetime.now(UTC)) == day
            for caller in callers:
                short = charges_cover_bills(trial.name, caller, found)
                if same_day:
                    bills_within_budgets(trial.name, caller, short, found)
            if same_day:
                await books_balance(trial.name, trial.budget, callers, found)

    run(scenario)
    # Else the budgets were never reached, and property 2 held for nothing.
    assert refused.get("budget-exhausted", 0) >= ROUNDS, (calls, refused)
    assert not found, report(family, found)
