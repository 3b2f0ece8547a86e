"""EachLabs (addon/profiles/eachlabs.yaml): the calls the CE.SDK plugins' EachLabs client makes,
predictions owned by their creator, and each priced per model, charged when it is created."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from support.guard import token_entry

from addon import flowstate
from addon.budget.books import account_key, periods
from addon.budget.component import Budget
from addon.caller import Caller
from addon.config.budget import Price
from addon.config.model import read
from addon.config.operations import Catalogue
from addon.config.profiles import load as load_profile
from addon.config.rules import Rules, load
from addon.jobs import objects
from addon.jobs.component import Ownership
from addon.metering import prices
from addon.metering.usage import from_body
from addon.problems import Refusal
from addon.resources import Resources
from addon.routing.router import Route, Router

HOST = "api.eachlabs.ai"
PREDICTION = "1f0fdf4d-7b3c-4e9a-8d25-c61f90ab4e73"  # EachLabs' ids are UUIDs
# What the plugins send (createEachLabsClient: model slug, version 0.0.1, the mapped input).
CREATE = {
    "model": "nano-banana-pro",
    "version": "0.0.1",
    "input": {"prompt": "a cat", "aspect_ratio": "1:1", "num_images": 1, "output_format": "png"},
}
CREATED = {"status": "success", "message": "Prediction created", "predictionID": PREDICTION}
DONE = {"id": PREDICTION, "status": "success", "output": "https://x/a.png", "metrics": {"cost": 1}}


def catalogue() -> Catalogue:
    profile = load_profile("eachlabs")
    return Catalogue(profile.operations, profile.objects, (), profile.name)


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/prediction", "predictions.create"),
        ("GET", f"/v1/prediction/{PREDICTION}", "predictions.get"),
        ("POST", "/api/v1/upload", "upload"),  # the plugins' storage.upload (image-to-image)
        ("POST", "/v1/prediction/run", "predictions.run"),
        ("POST", f"/v1/prediction/{PREDICTION}/cancel", "predictions.cancel"),
        ("GET", "/v1/executions", "executions"),
        ("GET", "/v1/prediction/run", None),  # no id: no operation
        ("DELETE", f"/v1/prediction/{PREDICTION}", None),
    ],
)
def test_the_plugins_calls_are_the_operations_they_open(
    method: str, path: str, name: str | None
) -> None:
    found = catalogue().operation(method, HOST, path)
    assert (found.name if found else None) == name
    opened = {o.name for o in load_profile("eachlabs").operations if o.browser}
    assert opened == {"predictions.create", "predictions.get", "upload"}


def test_a_prediction_is_named_by_its_path_and_created_by_predictionID() -> None:
    cat = catalogue()
    for path in (f"/v1/prediction/{PREDICTION}", f"/V1//Prediction/{PREDICTION.upper()};x=1/"):
        named = objects.in_path(cat, "GET", HOST, path)
        assert {n.key for n in named} == {f"eachlabs.prediction:{PREDICTION}"}, path
    with pytest.raises(objects.Invalid):  # the shape of a poll, no id where one stands
        objects.in_path(cat, "GET", HOST, "/v1/prediction/x")
    spec = cat.objects["prediction"]
    assert objects.id_in_answer(spec, json.dumps(CREATED).encode(), {}.get) == PREDICTION


# -- the rules.yaml of an operator: token auth, the profile as shipped ---------------------------


def rules_file(tmp_path: Path, top: dict[str, Any] | None = None, **eachlabs: Any) -> Rules:
    doc = {
        "defaults": {"auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}}},
        "providers": {"eachlabs": {"profile": "eachlabs", **eachlabs}},
        **(top or {}),
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc))
    tokens = ",".join(token_entry(n, n) for n in ("alice", "bob"))
    return load(tmp_path / "rules.yaml", {"KR_TOKENS": tokens, "EACHLABS_API_KEY": "k"})


def flow_of(
    rules: Rules, method: str, path: str, identity: str, body: Any = None
) -> tuple[http.HTTPFlow, Route]:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, "/api/eachlabs" + path
    flow.request.headers.clear()
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = b"" if body is None else json.dumps(body).encode()
    route = Router(rules).route(method, flow.request.path, flow.request.headers.get)
    assert isinstance(route, Route), route
    flowstate.of(flow).update(provider="eachlabs", identity=identity)
    flow.response = None
    return flow, route


def answer(flow: http.HTTPFlow, body: dict[str, Any], status: int = 200) -> None:
    data = json.dumps(body).encode()
    flow.response = http.Response.make(status, data, {"content-type": "application/json"})


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    async def within_mitmproxy() -> Any:
        with taddons.context():
            return await scenario

    return asyncio.run(within_mitmproxy())


def test_only_the_creator_polls_or_cancels_a_prediction(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, allow=["browser", "predictions.cancel"])
    jobs = Ownership()
    with Resources().reload() as live:
        jobs.prepare(rules, live)()

    async def call(method: str, path: str, who: str, body: Any = None) -> Refusal | None:
        flow, route = flow_of(rules, method, path, who, body)
        refusal = await jobs.requestheaders(flow, route, Caller(who)) or await jobs.request(flow)
        if refusal is None and method == "POST" and path == "/v1/prediction":
            answer(flow, CREATED)
            jobs.responseheaders(flow)
            await jobs.response(flow)
        return refusal

    async def scenario() -> list[tuple[int, str] | None]:
        assert await call("POST", "/v1/prediction", "token:alice", CREATE) is None
        seen = []
        for method, path, who in [
            ("GET", f"/v1/prediction/{PREDICTION}", "token:alice"),
            ("GET", f"/v1/prediction/{PREDICTION}", "token:bob"),
            ("POST", f"/v1/prediction/{PREDICTION}/cancel", "token:bob"),
            ("GET", "/v1/prediction/2e44fdd0-a565-4f59-908c-c4625dfe5395", "token:alice"),
        ]:
            refusal = await call(method, path, who)
            seen.append(None if refusal is None else (refusal.status, refusal.reason))
        return seen

    unknown = (404, "unknown-job")
    assert run(scenario()) == [None, unknown, unknown, unknown]


# -- metering and budgets -------------------------------------------------------------------------


def test_an_answer_that_creates_a_prediction_counts_one() -> None:
    assert from_body(json.dumps(CREATED).encode()) == ({"predictions": 1}, None)
    cancelled = {"status": "cancelled", "message": "canceled", "predictionID": PREDICTION}
    assert from_body(json.dumps(cancelled).encode()) == ({}, None)  # a cancel made none
    assert from_body(json.dumps(DONE).encode()) == ({}, None)  # a poll, done or not


def test_a_prediction_price_is_its_worst_case_and_its_cost() -> None:
    price = read(Price, {"model": "veo3-1-*", "prediction": 3.2}, "rules.yaml", "p")
    assert prices.price_for((price,), "veo3-1-text-to-video", "v1/prediction") is price
    facts = prices.RequestFacts(model="veo3-1-text-to-video")
    assert prices.worst_case(price, facts, None, "POST") == 3.2 * prices.NANO
    assert prices.worst_case(price, facts, None, "GET") == 0
    assert prices.cost(price, {"predictions": 1}) == 3.2 * prices.NANO


def test_under_a_budget_a_prediction_is_charged_its_models_price_at_once(tmp_path: Path) -> None:
    price = [{"model": "nano-banana-pro", "prediction": 0.3}]
    rules = rules_file(tmp_path, prices=price, top={"budget": {"daily": 1.0}})
    budget = Budget()
    with Resources().reload() as live:
        budget.prepare(rules, live)()
    alice = Caller("token:alice")
    keys = tuple(account_key("token:alice", p) for p in periods(datetime.now(UTC)))

    async def books() -> dict[str, int]:
        assert budget.books is not None
        await asyncio.sleep(0)  # the settlement
        return (await budget.books.read(keys))[0]

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        for method, path, body, answered in [
            ("POST", "/v1/prediction", CREATE, CREATED),
            ("GET", f"/v1/prediction/{PREDICTION}", None, DONE),  # polls are free
            ("POST", "/v1/prediction", {**CREATE, "model": "flux-2-pro"}, None),
        ]:
            flow, route = flow_of(rules, method, path, "token:alice", body)
            refusal = budget.requestheaders(flow, route, alice) or await budget.request(flow)
            if refusal is not None:
                seen.append((refusal.status, refusal.reason))
                continue
            reserved = (await books()).get("reserved", 0)
            answer(flow, answered or {})
            budget.responseheaders(flow)
            budget.response(flow)
            seen.append((prices.usd(reserved), flowstate.of(flow).get("cost")))
        seen.append(prices.usd((await books()).get("spent", 0)))
        return seen

    create, poll, unpriced, spent = run(scenario())
    assert create == (0.3, 0.3) and poll == (0, None)  # nothing reserved, nothing metered
    assert unpriced == (403, "unpriced")  # a model with no price is never free
    assert spent == 0.3
