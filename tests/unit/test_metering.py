"""Usage parsing, the SSE meter (split anywhere, bounded, byte-exact when it strips), prices,
the worst case, and the prices:/budget: sections of rules.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import metered

from addon.config.budget import Price
from addon.config.model import ConfigError
from addon.config.rules import load
from addon.metering import prices
from addon.metering.stream import MAX_LINE, StreamMeter
from addon.metering.usage import from_body, from_headers, normalise

ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"model":"claude-sonnet-4","usage":'
    b'{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":100,'
    b'"cache_creation_input_tokens":40}}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":15}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def feed(meter: StreamMeter, data: bytes, size: int) -> bytes:
    out = [meter(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + meter(b"")


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_anthropic_stream_split_anywhere(size: int) -> None:
    meter = StreamMeter()
    assert feed(meter, ANTHROPIC_STREAM, size) == ANTHROPIC_STREAM
    assert meter.usage == {
        "input_tokens": 25,
        "output_tokens": 15,  # cumulative: the last delta, not 1 + 7 + 15
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 40,
    }
    assert meter.model == "claude-sonnet-4" and meter.complete


def test_without_strip_each_chunk_passes_untouched_and_at_once() -> None:
    meter = StreamMeter()
    for chunk in (ANTHROPIC_STREAM[:10], ANTHROPIC_STREAM[10:500], ANTHROPIC_STREAM[500:]):
        assert meter(chunk) is chunk


def test_a_stream_cut_before_its_end_is_not_complete() -> None:
    meter = StreamMeter()
    meter(ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_stop")])
    assert meter.usage["output_tokens"] == 15 and not meter.complete


@pytest.mark.parametrize("size", [1, 3, 50, 100_000])
def test_openai_chat_stream_stripped_byte_for_byte(size: int) -> None:
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "abc"}]}
    asked = b"".join(metered.chat_events({**body, "stream_options": {"include_usage": True}}))
    plain = b"".join(metered.chat_events(body))
    meter = StreamMeter(strip=True)
    assert feed(meter, asked, size) == plain
    assert meter.usage == {"input_tokens": 3, "output_tokens": 5} and meter.complete
    assert meter.model == "gpt-4o"


def test_strip_takes_out_spaced_and_leading_null_usage_and_keeps_crlf() -> None:
    meter = StreamMeter(strip=True)
    out = meter(b'data: {"usage": null, "object": "chat.completion.chunk", "choices": []}\r\n\r\n')
    out += meter(b'data: {"object":"chat.completion.chunk","choices":[],"usage" : null}\n\n')
    assert out == (
        b'data: {"object": "chat.completion.chunk", "choices": []}\r\n\r\n'
        b'data: {"object":"chat.completion.chunk","choices":[]}\n\n'
    )


def test_responses_api_stream() -> None:
    meter = StreamMeter()
    event = {
        "type": "response.completed",
        "response": {
            "model": "gpt-4o",
            "usage": {
                "input_tokens": 30,
                "output_tokens": 9,
                "input_tokens_details": {"cached_tokens": 10},
            },
        },
    }
    meter(b"event: response.completed\ndata: " + json.dumps(event).encode() + b"\n\n")
    assert meter.usage == {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 10}
    assert meter.complete


def test_memory_is_bounded_by_one_line() -> None:
    meter = StreamMeter()
    for _ in range(5):
        meter(b"x" * (MAX_LINE // 2))
    assert len(meter._partial) <= MAX_LINE
    meter(b'\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n')
    assert meter.usage == {"output_tokens": 3}


def test_usage_from_bodies_and_headers() -> None:
    chat = {"model": "m", "usage": {"prompt_tokens": 12, "completion_tokens": 4}}
    assert from_body(json.dumps(chat).encode()) == ({"input_tokens": 12, "output_tokens": 4}, "m")
    assert from_body(b"not json") == ({}, None)
    assert from_body(b'{"usage": "odd"}') == ({}, None)
    assert normalise({"input_tokens": -1, "output_tokens": True}) == {}
    headers = {"x-character-count": "42", "x-fal-billable-units": "1.5"}
    assert from_headers(headers.get) == {"characters": 42, "units": 1.5}
    assert from_headers({"x-character-count": "lots"}.get) == {}


def test_cost_and_cache_defaults(tmp_path: Path) -> None:
    rules = load(write(tmp_path, PRICED), {})
    anthropic, eleven, fal = rules.providers
    haiku = prices.price_for(anthropic.prices, "claude-haiku-4-5", "v1/messages")
    other = prices.price_for(anthropic.prices, "claude-opus-4", "v1/messages")
    assert haiku and other and haiku.output == 5.0 and other.output == 15.0
    assert haiku.cache_read == pytest.approx(0.1) and haiku.cache_write == pytest.approx(1.25)
    usage = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 2000}
    # 1000 x 1 + 100 x 5 + 2000 x 0.1 per million = $0.0017
    assert prices.usd(prices.cost(haiku, usage)) == pytest.approx(0.0017)
    voice = prices.price_for(eleven.prices, None, "v1/text-to-speech/x")
    assert voice and prices.usd(prices.cost(voice, {"characters": 1000})) == pytest.approx(0.3)
    flux = prices.price_for(fal.prices, None, "fal-ai/flux/requests/abc")
    assert flux and prices.usd(prices.cost(flux, {"units": 3})) == pytest.approx(0.075)
    assert prices.price_for(fal.prices, None, "fal-ai/other/x") is None
    assert rules.budget.daily == 5.0 and anthropic.budget.monthly == 20.0


def test_worst_case() -> None:
    price = Price(model="*", input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    body = {"model": "x", "max_tokens": 1000, "messages": [{"role": "user", "content": "hello"}]}
    facts, _ = prices.read_body(json.dumps(body).encode())
    assert facts.max_output == 1000 and facts.model == "x"
    nano = prices.worst_case(price, facts, None, "POST")
    # The output at its cap, every input character a token at the dearest input price.
    assert nano == pytest.approx(facts.input_bound * 3750 + 1000 * 15_000, abs=1)
    assert facts.input_bound >= len("hello")
    three, _ = prices.read_body(b'{"model": "x", "max_tokens": 100, "n": 3}')
    assert prices.worst_case(price, three, None, "POST") >= 300 * 15_000  # n outputs
    no_cap, _ = prices.read_body(b'{"model": "x"}')
    assert prices.worst_case(price, no_cap, 200, "POST") >= 200 * 15_000
    image = {"content": [{"source": {"data": "A" * 100_000}}]}
    assert prices.read_body(json.dumps(image).encode())[0].input_bound < 2000
    fal = Price(endpoint="fal-ai/*", unit=0.025, reserve=4)
    assert prices.worst_case(fal, facts, None, "POST") == 100_000_000
    assert prices.worst_case(fal, facts, None, "GET") == 0
    speech = Price(model="*", characters=300.0)
    said, _ = prices.read_body(b'{"text": "0123456789"}')
    assert prices.worst_case(speech, said, None, "POST") == 3_000_000  # $0.003


PRICED = """
budget: {daily: 5}
providers:
  anthropic:
    match: {prefix: /api/anthropic}
    upstream: https://api.anthropic.com
    credential: {header: x-api-key, key: {env: ANTHROPIC_API_KEY}}
    prices:
      - {model: "claude-haiku-*", input: 1.0, output: 5.0}
      - {model: "*", input: 3.0, output: 15.0, cache_read: 0.3, cache_write: 3.75}
    budget: {monthly: 20}
  elevenlabs:
    match: {prefix: /api/elevenlabs}
    upstream: https://api.elevenlabs.io
    credential: {header: xi-api-key, key: {env: ELEVENLABS_API_KEY}}
    prices: [{model: "*", characters: 300.0}]
  fal:
    match: {prefix: /api/fal}
    upstream: https://queue.fal.run
    credential: {header: authorization, key: {env: FAL_KEY}}
    prices: [{endpoint: "fal-ai/flux/*", unit: 0.025, reserve: 4}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("snippet", "key", "reason"),
    [
        ("prices: {model: x}", "providers.p.prices", "must be a list"),
        ("prices: [{input: 1}]", "providers.p.prices[0]", "either a model or an endpoint"),
        ("prices: [{model: x}]", "providers.p.prices[0]", "names no price"),
        ("prices: [{model: x, input: cheap}]", "providers.p.prices[0].input", "must be a number"),
        ("prices: [{model: x, input: -1}]", "providers.p.prices[0].input", "at least 0"),
        (
            "prices: [{model: x, output: 1, reserve: 2}]",
            "providers.p.prices[0].reserve",
            "endpoint",
        ),
        ("prices: [{model: x, output: 1, extra: 2}]", "providers.p.prices[0].extra", "unknown key"),
        ("budget: {}", "providers.p.budget", "needs daily or monthly"),
        ("budget: {daily: 1, weekly: 3}", "providers.p.budget.weekly", "unknown key"),
    ],
)
def test_bad_prices_and_budgets_name_file_key_and_reason(
    tmp_path: Path, snippet: str, key: str, reason: str
) -> None:
    text = (
        "providers:\n  p:\n    match: {prefix: /api/p}\n    upstream: https://p.example\n"
        "    credential: {header: x-k, key: {env: K}}\n    allow: ['* p.example/**']\n    "
        + snippet
        + "\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert (info.value.file, info.value.key) == (str(path), key)
    assert reason in info.value.reason


def test_top_level_budget_errors(tmp_path: Path) -> None:
    text = PRICED.replace("budget: {daily: 5}", "budget: {daily: lots}")
    with pytest.raises(ConfigError, match=r"budget.daily: must be a number"):
        load(write(tmp_path, text), {})


def test_the_worked_example_in_the_docs_loads(tmp_path: Path) -> None:
    page = (Path(__file__).parents[2] / "docs" / "budgets.md").read_text()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = load(write(tmp_path, example), {})
    (anthropic,) = rules.providers
    assert rules.budget.daily == 1.0 and anthropic.budget.daily == 0.5
    assert rules.limits_backend.redis and anthropic.auth.mode == "jwt"


def test_a_dated_snapshot_costs_what_its_family_costs_unless_priced_itself() -> None:

    family, snapshot, anything = (
        Price(model="gpt-4o", input=2.5, output=10.0),
        Price(model="gpt-4o-2024-05-13", input=5.0, output=15.0),
        Price(model="*", input=30.0, output=60.0),
    )
    listed = (snapshot, family, anything)
    assert prices.price_for(listed, "gpt-4o-2024-08-06", "") is family
    assert prices.price_for(listed, "gpt-4o-2024-05-13", "") is snapshot
    assert prices.price_for(listed, "o3", "") is anything
    haiku = Price(model="claude-3-5-haiku", input=0.8, output=4.0)
    assert prices.price_for((haiku,), "claude-3-5-haiku-20241022", "") is haiku
    assert prices.price_for((haiku,), "claude-3-5-haiku-latest", "") is None
    assert prices.family("gpt-4o-mini") == "gpt-4o-mini"


def test_counts_that_set_the_worst_case_must_be_whole_numbers() -> None:
    assert prices.invalid_count({"max_tokens": 10, "n": 2}) is None
    assert prices.invalid_count({"max_tokens": None}) is None
    for bad in ({"max_tokens": -1}, {"max_output_tokens": 1.5}, {"n": "2"}, {"n": False}):
        assert prices.invalid_count(bad) is not None, bad


def test_a_cut_anthropic_stream_is_bounded_by_what_it_passed_on() -> None:
    meter = StreamMeter()
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 9}}}
    text = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "héllo"}}
    tool = {"type": "content_block_delta", "delta": {"partial_json": '{"a": 1}'}}
    redacted = {"type": "content_block_start", "content_block": {"data": "xyz"}}
    for event in (start, text, tool, redacted):
        meter(b"data: " + json.dumps(event).encode() + b"\n\n")
    assert meter.streamed == len("héllo".encode()) + len('{"a": 1}') + 3
    assert meter.cut_usage(10) == {"input_tokens": 9, "output_tokens": meter.streamed + 10}
    openai = StreamMeter()
    openai(b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"hi"}}]}\n\n')
    assert openai.cut_usage(10) is None  # hidden reasoning tokens: no bound, the reservation


def test_images_are_priced_per_image_made_and_reserved_per_image_asked() -> None:
    price = Price(model="gpt-image-1", image=0.25)
    facts, _ = prices.read_body(json.dumps({"model": "gpt-image-1", "n": 3}).encode())
    assert prices.worst_case(price, facts, None, "POST") == 3 * prices.NANO // 4
    answer = {"created": 1, "data": [{"b64_json": "x"}, {"b64_json": "y"}], "usage": {}}
    usage, _ = from_body(json.dumps(answer).encode())
    assert usage == {"images": 2} and prices.cost(price, usage) == prices.NANO // 2
    embeddings = {"object": "list", "data": [{"embedding": [0.1]}], "model": "e"}
    assert "images" not in from_body(json.dumps(embeddings).encode())[0]


def test_openai_speech_reserves_its_input_characters() -> None:
    price = Price(model="tts-1", characters=15.0)
    facts, _ = prices.read_body(json.dumps({"model": "tts-1", "input": "x" * 1000}).encode())
    assert prices.worst_case(price, facts, None, "POST") == 15 * prices.NANO // 1000  # $0.015


def test_the_input_bound_counts_bytes_as_tokenizers_do() -> None:
    """A rare character is four UTF-8 bytes, and may be four tokens: counting characters
    would under-reserve a body of them."""
    from addon.metering.prices import read_body

    rare = "\U00012000" * 100  # cuneiform
    facts, _ = read_body(json.dumps({"messages": [{"content": rare}]}, ensure_ascii=False).encode())
    assert facts.input_bound >= len(rare.encode())
    escaped, _ = read_body(json.dumps({"messages": [{"content": rare}]}).encode())  # \ud808\udc00
    assert escaped.input_bound == facts.input_bound


def test_web_searches_are_bounded_by_max_uses_and_charged_per_search() -> None:
    """Anthropic bills each search its web search tool runs ($10 per 1,000) on top of tokens:
    a request's `max_uses` bounds them; the answer's `server_tool_use` counts them."""
    from addon.config.budget import Price
    from addon.metering.prices import cost, read_body, worst_case
    from addon.metering.usage import normalise

    price = Price(model="*", input=0.0, output=0.0, search=0.01)
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
    facts, _ = read_body(json.dumps({"max_tokens": 10, "tools": [tool]}).encode())
    assert facts.searches == 5
    assert worst_case(price, facts, None, "POST") == 50_000_000  # 5 x $0.01, in nano-dollars
    unbounded, _ = read_body(json.dumps({"tools": [{**tool, "max_uses": None}]}).encode())
    assert unbounded.searches is None
    usage = normalise({"input_tokens": 9, "server_tool_use": {"web_search_requests": 2}})
    assert usage["searches"] == 2 and cost(price, usage) == 20_000_000
