"""EachLabs through the real mitmdump, with a fake EachLabs (support/eachlabs.py): the calls the
CE.SDK plugins' EachLabs client makes, as it makes them (its session in a cookie: it sets no
header of its own), the server's key injected, a prediction readable only by its creator, and
each prediction charged its model's price under a budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.access_log import log_lines
from support.client import HttpClient, Reply
from support.eachlabs import HOST, UPLOADED, FakeEachLabs
from support.guard import multipart_body, token_entry
from support.proxy import TEST_KEYS
from support.upstream import UpstreamServer

ALICE, BOB = "alice-token-41d9", "bob-token-c07e"
ENV = {"KR_TOKENS": ",".join([token_entry("alice", ALICE), token_entry("bob", BOB)])}
PRICE = 0.30  # USD per nano-banana-pro prediction
# The plugins' body (createEachLabsClient), for NanoBananaPro.Text2Image.
CREATE = {
    "model": "nano-banana-pro",
    "version": "0.0.1",
    "input": {
        "prompt": "a cat",
        "aspect_ratio": "1:1",
        "resolution": "1K",
        "num_images": 1,
        "output_format": "png",
    },
}


@pytest.fixture
def fake(upstream: UpstreamServer) -> FakeEachLabs:
    return FakeEachLabs().install(upstream)


def start(factory: Any, tmp_path: Path, **top: Any) -> tuple[HttpClient, Path]:
    doc = {
        "defaults": {
            "auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}, "cookie": "kr_session"}
        },
        "providers": {
            "eachlabs": {
                "profile": "eachlabs",
                "prices": [{"model": CREATE["model"], "prediction": PRICE}],
            }
        },
        **top,
    }
    log = tmp_path / "access.log"
    args = ["--set", "keyrelay_access_log=json", "--set", f"keyrelay_access_log_file={log}"]
    proc = factory(yaml.safe_dump(doc), env=ENV, extra_args=args)
    return HttpClient(proc.port), log


def plugin(
    client: HttpClient,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    *extra: tuple[str, str],
) -> Reply:
    """As the plugins' client sends it: JSON's Content-Type on every call but an upload (a form:
    the browser sets its own), the session as a cookie (the browser's, to the app's origin)."""
    headers = [("Cookie", f"kr_session={token}"), *extra]
    if not isinstance(body, bytes):
        headers.append(("Content-Type", "application/json"))
        body = None if body is None else json.dumps(body).encode()
    return client.request(method, "/api/eachlabs" + path, body, headers)


def test_the_plugins_calls_with_the_key_injected_and_predictions_their_creators(
    keyrelay_factory: Any, upstream: UpstreamServer, fake: FakeEachLabs, tmp_path: Path
) -> None:
    client, log = start(keyrelay_factory, tmp_path)
    # A key of the client's own (EachLabs still reads X-API-Key) never goes upstream.
    created = plugin(client, "POST", "/v1/prediction", ALICE, CREATE, ("X-API-Key", "client-key"))
    assert created.status == 200, created.body
    made = created.json()["predictionID"]
    poll = f"/v1/prediction/{made}"
    assert plugin(client, "GET", poll, ALICE).json()["status"] == "processing"
    done = plugin(client, "GET", poll, ALICE).json()
    assert (done["status"], done["metrics"]["cost"]) == ("success", 0.039)

    form = multipart_body(
        'Content-Disposition: form-data; name="file"; filename="image.png"\r\n'
        "Content-Type: image/png\r\n\r\nPNG-bytes"
    )
    multipart = ("Content-Type", "multipart/form-data; boundary=XyZ")
    upload = plugin(client, "POST", "/api/v1/upload", ALICE, form, multipart)
    assert upload.status == 200 and upload.json() == {"url": UPLOADED}

    sent = upstream.requests
    assert [(r.method, r.target) for r in sent] == [
        ("POST", "/v1/prediction"),
        ("GET", poll),
        ("GET", poll),
        ("POST", "/api/v1/upload"),
    ]
    for r in sent:
        assert (r.host or "").split(":")[0] == HOST
        assert r.header_all("authorization") == [f"Bearer {TEST_KEYS['EACHLABS_API_KEY']}"]
        assert r.header("x-api-key") is None and r.header("cookie") is None
    assert sent[0].json() == CREATE and sent[3].body == form

    # Bob, or Alice with someone else's prediction: 404, nothing reaches EachLabs.
    stranger = "2e44fdd0-a565-4f59-908c-c4625dfe5395"
    for token, path in ((BOB, poll), (ALICE, f"/v1/prediction/{stranger}")):
        refused = plugin(client, "GET", path, token)
        assert refused.status == 404 and refused.json()["type"].endswith("/unknown-job")
    anonymous = plugin(client, "GET", poll, "nobody")
    assert anonymous.status == 401
    assert len(upstream.requests) == 4

    # Without a budget the spend is still kept: the create cost its model's price.
    first = log_lines(log, 1)[0]
    assert (first["usage"], first["cost"], first["model"]) == (
        {"predictions": 1},
        PRICE,
        CREATE["model"],
    )


def test_under_a_budget_each_prediction_is_charged_its_models_price(
    keyrelay_factory: Any, fake: FakeEachLabs, tmp_path: Path
) -> None:
    client, log = start(keyrelay_factory, tmp_path, budget={"daily": 1.0})
    for _ in range(3):
        made = plugin(client, "POST", "/v1/prediction", ALICE, CREATE)
        assert made.status == 200, made.body
        poll = f"/v1/prediction/{made.json()['predictionID']}"
        assert plugin(client, "GET", poll, ALICE).status == 200  # polls are free
    refused = plugin(client, "POST", "/v1/prediction", ALICE, CREATE)
    assert refused.status == 429  # 0.9 spent: another 0.3 does not fit
    assert refused.json()["type"].endswith("/budget-exhausted")
    unpriced = plugin(client, "POST", "/v1/prediction", BOB, {**CREATE, "model": "flux-2-pro"})
    assert unpriced.status == 403 and unpriced.json()["type"].endswith("/unpriced")
    assert len(fake.created) == 3
    usage = client.get("/_keyrelay/usage", [("Cookie", f"kr_session={ALICE}")]).json()
    assert usage["spent"] == pytest.approx(3 * PRICE) and usage["reserved"] == 0
    creates = [x for x in log_lines(log, 8) if x.get("method") == "POST" and x["status"] == 200]
    assert [x["cost"] for x in creates] == [PRICE] * 3
