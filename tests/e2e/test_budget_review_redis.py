"""The budget review's cases, re-run through two keyrelay instances that share one Redis.

The review spent past `budget: {daily: 0.05}` as a signed-in user of a browser app can: each
case below is what it sent, spread over both instances at once, in waves, many times over.
The fake providers (support/review_billing.py) bill every request that reaches them as the
real provider would, from their own price list, whatever their answers say. Done when every
case's bill is at most the budget (1.0x), what cannot be priced is refused with the stated
problem, and a stopped stream is charged at least its bill and at most the documented bound
(the bytes of the text it streamed, plus CUT_MARGIN output tokens).

Each case has its own user, so no case spends another's money.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.client import HttpClient, Reply
from support.guard import token_entry
from support.proxy import KeyrelayProcess
from support.redis_server import RedisServer
from support.review_billing import (
    PER_MILLION,
    STREAM_TOKENS,
    TOKEN_PRICES,
    Bill,
    Ledger,
    Providers,
)
from support.tls import TlsMaterial
from support.upstream import UpstreamServer

from addon.budget.component import CUT_MARGIN

BUDGET = Fraction("0.05")  # USD per user per day, as in the review
ORIGIN = "https://app.example.com"
CASES = (
    "stream-escape",
    "images",
    "speech",
    "background",
    "batch",
    "batch-cap",
    "fal-queue",
    "fal-unpriced",
    "inference",
    "snapshot",
    "no-cap",
    "counts",
    "stored-context",
    "web-search",
    "client-leaves",
    "realtime-secret",
    "openai-batch",
    "websocket",
    "stop",
)
TOKENS = {case: f"review-{case}-5e1f0a" for case in CASES}
TOTAL, WAVE = 24, 8  # each attack: 24 requests, 8 at a time over both instances


def rules_text(redis_url: str) -> str:
    def credential(header: str, env: str, fmt: str = "{key}") -> dict[str, Any]:
        return {"header": header, "format": fmt, "key": {"env": env}}

    # The providers' published prices, as an operator copies them into rules.yaml. Ownership is
    # off: this file is about money (ownership has tests of its own).
    providers = {
        "openai": {
            "match": {"prefix": "/api/openai"},
            "upstream": "https://api.openai.com/v1",
            "credential": credential("authorization", "OPENAI_API_KEY", "Bearer {key}"),
            "allow": ["browser", "realtime.socket", "realtime.client_secrets", "batches"],
            "ownership": False,
            "prices": [
                {"model": "gpt-4o", "input": 2.5, "output": 10.0},
                {"model": "dall-e-3", "image": 0.04},
                {"model": "tts-1", "characters": 15.0},
            ],
        },
        "anthropic": {
            "match": {"prefix": "/api/anthropic"},
            "upstream": "https://api.anthropic.com",
            "credential": credential("x-api-key", "ANTHROPIC_API_KEY"),
            "allow": ["browser", "batches.create"],
            "ownership": False,
            "prices": [
                {"model": "claude-haiku-4-5*", "input": 1.0, "output": 5.0},
                {"model": "claude-sonnet-4*", "input": 3.0, "output": 15.0},
            ],
        },
        "fal": {
            "match": {"header": "x-fal-target-url", "paths": ["/api/fal/proxy"]},
            "credential": credential("authorization", "FAL_KEY", "Key {key}"),
            "ownership": False,
            "prices": [{"endpoint": "fal-ai/flux/*", "unit": 0.025, "reserve": 1}],
        },
        "inference": {
            "match": {"header": "x-inf-target-url", "paths": ["/api/inference/proxy"]},
            "credential": credential("authorization", "INFERENCE_API_KEY", "Bearer {key}"),
            "ownership": False,
        },
    }
    doc = {
        "budget": {"daily": float(BUDGET)},
        "limits_backend": {"redis": redis_url, "on_error": "closed"},
        "defaults": {
            "auth": {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}},
            "cors": {"origins": [ORIGIN]},
        },
        "providers": providers,
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Review:
    ledger: Ledger
    fakes: Providers
    upstream: UpstreamServer
    proxies: tuple[KeyrelayProcess, KeyrelayProcess]
    logs: tuple[Path, Path]
    case: str = "-"

    @property
    def ports(self) -> list[int]:
        return [p.port for p in self.proxies]

    def begin(self, case: str) -> None:
        self.ledger.wait_idle()
        self.case = self.ledger.case = case
        self.fakes.latency, self.fakes.token_gap = 0.3, 0.05

    def headers(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {TOKENS[self.case]}"), ("Origin", ORIGIN), *extra]

    def billed(self) -> Fraction:
        self.ledger.wait_idle()
        return self.ledger.total(self.case)

    def usage(self, port: int | None = None) -> dict[str, Any]:
        reply = HttpClient(port or self.ports[0]).get("/_keyrelay/usage", self.headers())
        assert reply.status == 200, reply.body
        return dict(reply.json())

    def settled(self, timeout: float = 10.0) -> dict[str, Any]:
        """The user's books once nothing is reserved any more (settlements are asynchronous)."""
        deadline = time.monotonic() + timeout
        while (mine := self.usage())["reserved"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return mine

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for log in self.logs:
            text = log.read_text() if log.exists() else ""
            lines += [json.loads(x) for x in text.splitlines() if x.strip()]
        mine = [x for x in lines if x.get("identity") == f"token:{self.case}"]
        return sorted(mine, key=lambda x: str(x.get("time")))


@pytest.fixture(scope="module")
def shared(test_ca: TlsMaterial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    """One redis-server, one set of fake providers and two keyrelay instances on them."""
    work = tmp_path_factory.mktemp("review")
    ledger = Ledger()
    fakes = Providers(ledger)
    env = {"KR_TOKENS": ",".join(token_entry(case, t) for case, t in TOKENS.items())}
    with RedisServer() as redis, UpstreamServer(test_ca) as upstream:
        fakes.install(upstream)
        text = rules_text(redis.url)
        logs = (work / "a.log", work / "b.log")
        proxies = tuple(
            KeyrelayProcess(
                upstream_port=upstream.port,
                ca_file=test_ca.ca_cert,
                workdir=work / name,
                rules_text=text,
                env=env,
                extra_args=[
                    "--set",
                    "keyrelay_access_log=json",
                    "--set",
                    f"keyrelay_access_log_file={log}",
                ],
            )
            for name, log in zip(("a", "b"), logs, strict=True)
        )
        a, b = proxies
        with a, b:
            yield Review(ledger, fakes, upstream, (a, b), logs)


@pytest.fixture
def review(shared: Review) -> Iterator[Review]:
    for proc in shared.proxies:
        assert proc.alive(), proc.describe()
    yield shared
    shared.ledger.wait_idle()
    errors = shared.upstream.errors
    if errors:
        pytest.fail("fake provider errors:\n" + "\n".join(errors), pytrace=False)


# -- helpers -------------------------------------------------------------------------------------


def spread(
    review: Review, send: Callable[[HttpClient, int], Reply], total: int = TOTAL, wave: int = WAVE
) -> list[Reply]:
    """`total` requests in waves of `wave` sent at once, alternating between the instances."""
    replies: list[Reply] = []
    for first in range(0, total, wave):
        count = min(wave, total - first)
        barrier = threading.Barrier(count)

        def one(i: int, barrier: threading.Barrier = barrier) -> Reply:
            with HttpClient(review.ports[i % 2], keep_alive=False, timeout=30) as c:
                barrier.wait()
                return send(c, i)

        with ThreadPoolExecutor(count) as pool:
            replies += pool.map(one, range(first, first + count))
    return replies


def post(review: Review, path: str, body: Any, *extra: tuple[str, str]) -> Callable[..., Reply]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    def send(c: HttpClient, _i: int) -> Reply:
        headers = review.headers(("Content-Type", "application/json"), *extra)
        return c.post(path, raw, headers)

    return send


def kind(reply: Reply) -> str:
    """The problem type's name, or the status for an answer that is not a problem."""
    try:
        data = reply.json()
    except ValueError:
        return str(reply.status)
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return f"{reply.status} {data['type'].rsplit('/', 1)[-1]}"
    return str(reply.status)


def outcomes(replies: list[Reply]) -> Counter[str]:
    return Counter(kind(r) for r in replies)


def within_budget(
    review: Review, replies: list[Reply] | None = None, seen: Counter[str] | None = None
) -> Fraction:
    """The case's bill, at most the budget; reported as a multiple of it."""
    billed = review.billed()
    multiple = billed / BUDGET
    seen = seen or (outcomes(replies) if replies is not None else Counter())
    print(
        f"\n[review] {review.case}: billed ${float(billed):.6f}"
        f" = {float(multiple):.2f}x the budget; {seen}"
    )
    bills = Counter(b.what for b in review.ledger.bills(review.case))
    charged = Counter(
        f"{x.get('status')} cost={x.get('cost')} {x.get('charged') or ''}".strip()
        for x in review.log_lines()
    )
    assert billed <= BUDGET, (
        f"{review.case}: the providers billed ${float(billed):.4f}, {float(multiple):.2f}x the "
        f"${BUDGET} budget; answers {seen}; bills {dict(bills)}; keyrelay logged {dict(charged)}"
    )
    return billed


def metered(review: Review, replies: list[Reply], ok: int = 200) -> None:
    """A priced case: some went through, the rest were refused for want of budget, and the
    whole lot cost the user at most the budget."""
    seen = outcomes(replies)
    within_budget(review, replies)
    assert seen[str(ok)] >= 1, f"{review.case}: nothing went through, nothing was tested: {seen}"
    assert set(seen) <= {str(ok), "429 budget-exhausted"}, seen


def refused(review: Review, replies: list[Reply], expected: str) -> None:
    """Every one refused with `expected`; nothing reached the provider."""
    seen = outcomes(replies)
    within_budget(review, replies)
    assert seen == Counter({expected: len(replies)}), seen
    assert review.ledger.bills(review.case) == []


def openai_chat(**body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Tell me everything about the sea, at length."}]
    return {"model": "gpt-4o", "messages": messages, **body}


# -- OpenAI ---------------------------------------------------------------------------------------


def test_chat_stream_with_the_stream_key_spelt_with_an_escape(review: Review) -> None:
    """`"str\\u0065am": true` is a stream: its usage is asked for and charged (was 12x)."""
    review.begin("stream-escape")
    raw = json.dumps(openai_chat(max_tokens=1500)).encode()
    raw = raw[:-1] + b', "str\\u0065am": true}'
    assert json.loads(raw)["stream"] is True
    replies = spread(review, post(review, "/api/openai/chat/completions", raw))
    metered(review, replies)
    streamed = [r for r in replies if r.status == 200]
    assert all(r.body.rstrip().endswith(b"data: [DONE]") for r in streamed)
    assert not any(b'"usage"' in r.body for r in streamed)  # the client did not ask for it


def test_images_whose_answer_carries_no_usage(review: Review) -> None:
    """DALL-E answers name no usage: each image made is charged (was 16x)."""
    review.begin("images")
    body = {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "size": "1024x1024"}
    metered(review, spread(review, post(review, "/api/openai/images/generations", body)))


def test_speech(review: Review) -> None:
    """/v1/audio/speech answers audio and no count: its characters are charged (was 2.4x)."""
    review.begin("speech")
    body = {"model": "tts-1", "voice": "alloy", "input": "Read this aloud, please. " * 60}
    metered(review, spread(review, post(review, "/api/openai/audio/speech", body)))


def test_background_response_is_refused(review: Review) -> None:
    """A background response's usage comes after its answer (was 12x): 403 unpriced."""
    review.begin("background")
    body = {"model": "gpt-4o", "input": "Write a long essay.", "background": True}
    for cap in ({"max_output_tokens": 1000}, {}):
        send = post(review, "/api/openai/responses", {**body, **cap})
        refused(review, spread(review, send, total=12), "403 unpriced")


def test_snapshot_named_by_the_answer_costs_its_family_price(review: Review) -> None:
    """`gpt-4o` is priced; the answers say `gpt-4o-2024-08-06` (was 6x)."""
    review.begin("snapshot")
    send = post(review, "/api/openai/chat/completions", openai_chat(max_tokens=800))
    metered(review, spread(review, send))
    assert {b.usage["output_tokens"] for b in review.ledger.bills("snapshot")} == {800}


def test_no_max_tokens_reserves_what_openai_may_generate(review: Review) -> None:
    """With no cap OpenAI generates up to gpt-4o's 16,384 output tokens (was 3.3x)."""
    review.begin("no-cap")
    send = post(review, "/api/openai/chat/completions", openai_chat())
    replies = spread(review, send)
    within_budget(review, replies)
    assert set(outcomes(replies)) <= {"200", "429 budget-exhausted", "403 request-exceeds-budget"}


@pytest.mark.parametrize(
    "field",
    [
        {"max_tokens": -1},
        {"max_tokens": -16384},
        {"max_tokens": 100.0},
        {"max_tokens": 1e2},
        {"max_tokens": "100"},
        {"max_tokens": True},
        {"max_completion_tokens": "500"},
        {"max_completion_tokens": 0.5},
        {"n": 2.0},
        {"n": -3},
    ],
    ids=lambda f: json.dumps(f),
)
def test_counts_that_are_not_whole_numbers_are_refused(review: Review, field: Any) -> None:
    """Negative, fractional, string or boolean counts: 400 invalid-count, nothing reserved."""
    review.begin("counts")
    send = post(review, "/api/openai/chat/completions", openai_chat(**field))
    refused(review, spread(review, send, total=8), "400 invalid-count")
    assert review.settled()["spent"] == 0


def test_stored_context_is_refused(review: Review) -> None:
    """previous_response_id and conversation add a stored context billed as input: 403."""
    review.begin("stored-context")
    body = {"model": "gpt-4o", "input": "Go on.", "max_output_tokens": 100}
    for extra in (
        {"previous_response_id": "resp_review00000001"},
        {"conversation": "conv_review0001"},
    ):
        send = post(review, "/api/openai/responses", {**body, **extra})
        refused(review, spread(review, send, total=12), "403 unpriced")


def test_non_streamed_call_whose_client_leaves(review: Review) -> None:
    """The client leaves before the answer; OpenAI generates and bills it anyway (was 3x)."""
    review.begin("client-leaves")
    review.fakes.latency = 1.5
    raw = json.dumps(openai_chat(max_tokens=1500)).encode()
    head = [
        "POST /api/openai/chat/completions HTTP/1.1",
        "Host: localhost",
        *(f"{k}: {v}" for k, v in review.headers(("Content-Type", "application/json"))),
        f"Content-Length: {len(raw)}",
    ]
    request = "\r\n".join(head).encode() + b"\r\n\r\n" + raw

    def leave(i: int, barrier: threading.Barrier) -> bytes:
        with socket.create_connection(("127.0.0.1", review.ports[i % 2])) as sock:
            barrier.wait()
            sock.sendall(request)
            sock.settimeout(0.4)  # a refusal comes at once; an answer takes 1.5 s
            try:
                return sock.recv(65536)
            except TimeoutError:
                return b""  # the user closed the tab

    answers: list[bytes] = []
    for first in range(0, TOTAL, WAVE):
        barrier = threading.Barrier(WAVE)
        with ThreadPoolExecutor(WAVE) as pool:
            answers += pool.map(lambda i, b=barrier: leave(i, b), range(first, first + WAVE))
    seen = Counter(a.split(b"\r\n", 1)[0].decode() or "left" for a in answers)
    billed = len(review.ledger.wait_for_bills("client-leaves", 1, timeout=5))
    within_budget(review, seen=seen)
    assert seen["left"] >= 1 and billed >= 1, seen
    assert set(seen) <= {"left", "HTTP/1.1 429 Too Many Requests"}, seen


def test_realtime_client_secrets_and_batches_are_refused(review: Review) -> None:
    """What is spent with a Realtime secret, or in a batch file, is outside the books: 403."""
    review.begin("realtime-secret")
    body = {"session": {"type": "realtime", "model": "gpt-realtime"}}
    send = post(review, "/api/openai/realtime/client_secrets", body)
    refused(review, spread(review, send, total=12), "403 unpriced")
    review.begin("openai-batch")
    batch = {
        "input_file_id": "file-review0000001",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    refused(
        review, spread(review, post(review, "/api/openai/batches", batch), total=12), "403 unpriced"
    )


def test_realtime_websocket_of_a_user_whose_budget_is_spent(review: Review) -> None:
    """A Realtime session is metered from its messages (budget/sessions.py), priced by the
    session's model: one the price list does not name is refused, 403 unpriced."""
    review.begin("websocket")
    client = HttpClient(review.ports[0])
    chat = openai_chat(max_tokens=1500)
    statuses = [client.post("/api/openai/chat/completions", json=chat, headers=review.headers())]
    while statuses[-1].status == 200 and len(statuses) < 10:
        statuses.append(
            client.post("/api/openai/chat/completions", json=chat, headers=review.headers())
        )
    assert kind(statuses[-1]) == "429 budget-exhausted", [kind(r) for r in statuses]
    upgrade = (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "realtime"),
    )

    def socket_open(c: HttpClient, _i: int) -> Reply:
        return c.get("/api/openai/realtime?model=gpt-4o-realtime-preview", review.headers(*upgrade))

    replies = spread(review, socket_open, total=12)
    within_budget(review, replies)
    assert outcomes(replies) == Counter({"403 unpriced": 12}), outcomes(replies)
    assert not [b for b in review.ledger.bills("websocket") if "WebSocket" in b.what]


# -- Anthropic ------------------------------------------------------------------------------------


def test_message_batches_are_refused(review: Review) -> None:
    """A batch runs every request in it at its own max_tokens (was 14x; with a top-level
    `max_tokens: 1` that a reservation read, 96x): keyrelay cannot meter a batch, 403."""
    messages = [{"role": "user", "content": "Summarise the history of sailing."}]
    params = {"model": "claude-haiku-4-5", "max_tokens": 8192, "messages": messages}
    batch = {"requests": [{"custom_id": f"r{i}", "params": params} for i in range(40)]}
    for case, body in (("batch", batch), ("batch-cap", {**batch, "max_tokens": 1})):
        review.begin(case)
        send = post(review, "/api/anthropic/v1/messages/batches", body)
        refused(review, spread(review, send, total=12), "403 unpriced")


def test_web_search_tool_is_refused(review: Review) -> None:
    """Anthropic's web search is billed per search: 403 unpriced."""
    review.begin("web-search")
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        "messages": [{"role": "user", "content": "What happened in the news today?"}],
    }
    refused(
        review, spread(review, post(review, "/api/anthropic/v1/messages", body)), "403 unpriced"
    )


# -- fal, inference.sh ----------------------------------------------------------------------------


def fal(review: Review, method: str, path: str, body: Any = None) -> Callable[..., Reply]:
    def send(c: HttpClient, _i: int) -> Reply:
        headers = review.headers(("x-fal-target-url", "https://queue.fal.run" + path))
        return c.request(method, "/api/fal/proxy", json=body, headers=headers)

    return send


def test_fal_submission_holds_its_reservation_until_its_result_is_fetched(review: Review) -> None:
    """fal bills a job when it runs, whether or not its result is fetched; its cost reaches
    keyrelay only with the result. A submission's reservation is held until then (the
    review's 30x: released when the submit answered, so submissions never ran out)."""
    review.begin("fal-queue")
    submit = fal(review, "POST", "/fal-ai/flux/dev", {"prompt": "a red fox", "num_images": 1})
    replies = spread(review, submit, total=30, wave=5)  # submitted, never fetched (yet)
    within_budget(review, replies)
    ids = [r.json()["request_id"] for r in replies if r.status == 200]
    assert ids and set(outcomes(replies)) <= {"200", "429 budget-exhausted"}, outcomes(replies)
    for i, request_id in enumerate(ids):  # the app polls, then fetches each result
        path = f"/fal-ai/flux/requests/{request_id}"
        with HttpClient(review.ports[i % 2]) as c:
            assert fal(review, "GET", path + "/status")(c, i).status == 200
            result = fal(review, "GET", path)(c, i)
        assert result.status == 200 and result.header("x-fal-billable-units") == "1", result.body
    more = spread(review, submit, total=8)
    billed = within_budget(review, replies + more)
    mine = review.settled()
    assert mine["reserved"] == 0, mine
    assert Fraction(str(mine["spent"])) == billed, (mine, float(billed))


def test_fal_endpoint_with_no_price_is_refused(review: Review) -> None:
    review.begin("fal-unpriced")
    send = fal(review, "POST", "/fal-ai/veo3", {"prompt": "a storm at sea", "duration": "8s"})
    refused(review, spread(review, send), "403 unpriced")


def test_inference_sh_runs_are_refused(review: Review) -> None:
    review.begin("inference")

    def send(c: HttpClient, _i: int) -> Reply:
        headers = review.headers(("x-inf-target-url", "https://api.inference.sh/apps/run"))
        return c.post(
            "/api/inference/proxy", json={"app": "infsh/flux", "input": {}}, headers=headers
        )

    refused(review, spread(review, send), "403 unpriced")


# -- a stopped stream ------------------------------------------------------------------------------


@dataclass
class Stop:
    status: bytes  # the status line the client got
    seen: int  # text deltas the client read before it stopped
    bill: Bill | None  # what the provider billed (None: keyrelay refused the click)
    line: dict[str, Any]  # keyrelay's access-log line


STOP_AFTER = (3, 12, 40)  # text deltas read before each of the three Stop clicks
HAIKU = TOKEN_PRICES["claude-haiku-4-5"]


@pytest.fixture(scope="module")
def stops(shared: Review) -> list[Stop]:
    """Three Stop clicks on a `max_tokens: 8192` Claude Haiku stream, one after another, on
    alternate instances. Its reservation (8,192 output tokens, $0.041) leaves room for one
    at a time, so the second click only goes through if the first was charged what it used."""
    review = shared
    review.begin("stop")
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 8192,
        "stream": True,
        "messages": [{"role": "user", "content": "Write me a very long story about the sea."}],
    }
    raw = json.dumps(body).encode()
    done: list[Stop] = []
    for click, after in enumerate(STOP_AFTER):
        head = [
            "POST /api/anthropic/v1/messages HTTP/1.1",
            "Host: localhost",
            *(f"{k}: {v}" for k, v in review.headers(("Content-Type", "application/json"))),
            f"Content-Length: {len(raw)}",
            "Connection: close",  # so a refusal's answer ends with its connection
        ]
        port = review.ports[click % 2]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + raw)
            sock.settimeout(10)
            seen = b""
            while seen.count(b'"text_delta"') < after:
                piece = sock.recv(65536)
                if not piece:
                    break
                seen += piece
                if b"\r\n\r\n" in seen and not seen.startswith(b"HTTP/1.1 200 "):
                    break  # refused: there is nothing to stop
        status = seen.split(b"\r\n", 1)[0]
        billed = len(done) - [s.bill for s in done].count(None)
        bill = None
        if status == b"HTTP/1.1 200 OK":
            bill = review.ledger.wait_for_bills("stop", billed + 1)[billed]
        deadline = time.monotonic() + 10
        while len(lines := review.log_lines()) <= click and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(lines) == click + 1, lines
        done.append(Stop(status, seen.count(b'"text_delta"'), bill, lines[-1]))
        review.settled()  # the user clicks again once the last one is settled
    review.ledger.wait_idle()
    return done


def stop_report(stops: list[Stop]) -> str:
    return "; ".join(
        f"read {s.seen}, billed {s.bill.usage['output_tokens']} tokens "
        f"${float(s.bill.usd):.6f}, charged ${s.line.get('cost')} ({s.line.get('charged')})"
        if s.bill
        else f"{s.status.decode()} {s.line.get('refusal')}"
        for s in stops
    )


def test_three_stop_clicks_each_go_through_and_fit_the_budget(
    review: Review, stops: list[Stop]
) -> None:
    """Each click costs what it can have used, so the next fits (a click charged its whole
    reservation would leave no room for the second); never less than the provider billed."""
    review.case = "stop"
    print(f"\n[review] stop: {stop_report(stops)}")
    assert [s.status for s in stops] == [b"HTTP/1.1 200 OK"] * 3, stop_report(stops)
    assert all(s.seen >= after for s, after in zip(stops, STOP_AFTER, strict=True))
    within_budget(review)
    for s in stops:
        assert s.bill is not None
        assert s.line["charged"] == "estimate", s.line
        assert s.line["usage"]["input_tokens"] == s.bill.usage["input_tokens"], (s.line, s.bill)
        # Never less than the provider billed ...
        assert Fraction(str(s.line["cost"])) >= s.bill.usd, stop_report(stops)
        # ... and at most what keyrelay documents: the bytes of every text delta (of the tokens
        # made, a bound on those passed on) plus CUT_MARGIN tokens, with the input.
        made = s.bill.usage["output_tokens"]
        made_bytes = sum(len(STREAM_TOKENS[i % len(STREAM_TOKENS)]) for i in range(made))
        documented = (
            s.bill.usage["input_tokens"] * HAIKU.input + (made_bytes + CUT_MARGIN) * HAIKU.output
        ) * PER_MILLION
        assert Fraction(str(s.line["cost"])) <= documented + Fraction(1, 10**9), stop_report(stops)
    assert Fraction(str(review.settled()["spent"])) == sum(
        (Fraction(str(s.line["cost"])) for s in stops), Fraction(0)
    )
