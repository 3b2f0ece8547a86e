"""Usage x price = cost, and a request's worst case before it is sent.

Money is counted in nano-dollars (integers), so that the books add up exactly in memory and in
Redis; `usd` turns it back for people.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from addon.config.budget import Price
from addon.metering import gemini
from addon.metering.usage import (
    CACHE_READ,
    CACHE_WRITE,
    CHARACTERS,
    IMAGES,
    INPUT,
    OUTPUT,
    PREDICTIONS,
    SEARCHES,
    SECONDS,
    UNITS,
    Usage,
    seconds_of,
)

NANO = 1_000_000_000  # nano-dollars per dollar
_PER_MILLION = NANO // 1_000_000
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
DEFAULT_OUTPUT_TOKENS = 4096  # a body that names no cap, under a provider with no validation cap
IMAGE_TOKENS = 1600  # the most an image costs as input (Anthropic: ~1,600 tokens at 1.15 MP)
_INLINE_DATA = 1024  # a string this long under `data` or as a data: URL is an image or a file
# The fewest bytes a second of uploaded audio takes (Opus at 6 kbit/s, the lowest rate the
# formats OpenAI reads are made at): an upload's size bounds the seconds it can be billed for.
AUDIO_BYTES_PER_SECOND = 750


_SNAPSHOT = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$")


def family(model: str) -> str:
    """A dated snapshot's family, as providers name them: `gpt-4o-2024-08-06` -> `gpt-4o`,
    `claude-3-5-sonnet-20241022` -> `claude-3-5-sonnet`; any other name is its own."""
    return _SNAPSHOT.sub("", model)


def price_for(prices: Sequence[Price], model: str | None, endpoint: str) -> Price | None:
    """The first price, in the order listed, that matches the model or its family (so the
    answer's dated snapshot costs what its family costs; list a snapshot first to price it
    apart). A request naming no model may name it in its path (Gemini)."""
    model = model or gemini.path_model(endpoint)
    kin = family(model) if model else None
    return next(
        (p for p in prices if p.matches(model, endpoint) or (kin and p.matches(kin, endpoint))),
        None,
    )


COUNTS = {**dict.fromkeys(TOKEN_FIELDS, 0), "n": 1}


def invalid_count(data: dict[str, Any]) -> str | None:
    """What is wrong with a count that sets the worst case (`max_tokens` and kin, `n`), read
    as the providers read it: a JSON integer, at least 0 (`n`: 1). A float, a numeric string,
    a boolean or a negative number is refused, not guessed at: OpenAI and Anthropic answer
    each with a 400 themselves, and a guess could reserve less than they bill."""
    for name, least in COUNTS.items():
        if name not in data or data[name] is None:
            continue
        value = data[name]
        if type(value) is not int or value < least:
            return f"{name} must be a whole number of at least {least}"
    if data.get("seconds") is not None and seconds_of(data["seconds"]) is None:
        return "seconds must be a number of at least 0"
    return gemini.invalid_count(data)


# Each unit of usage and the rate of a price it is charged at: per million (tokens,
# characters), or each (units, images, seconds, searches, predictions).
_PER_MILLION_RATES = (
    (INPUT, "input"),
    (OUTPUT, "output"),
    (CACHE_READ, "cache_read"),
    (CACHE_WRITE, "cache_write"),
    (CHARACTERS, "characters"),
)
_EACH_RATES = (
    (UNITS, "unit"),
    (IMAGES, "image"),
    (SECONDS, "second"),
    (SEARCHES, "search"),
    (PREDICTIONS, "prediction"),
)


def cost(price: Price, usage: Usage) -> int:
    """Nano-dollars, rounded to the nearest."""
    per_million = sum(
        usage.get(unit, 0) * getattr(price, rate) for unit, rate in _PER_MILLION_RATES
    )
    each = sum(usage.get(unit, 0) * getattr(price, rate) for unit, rate in _EACH_RATES)
    return round(per_million * _PER_MILLION + each * NANO)


def usd(nano: int) -> float:
    return round(nano / NANO, 9)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a JSON request body says about its cost."""

    model: str | None = None
    max_output: int | None = None  # max_tokens and alike
    input_bound: int = 0  # input tokens cannot exceed this
    text_chars: int | None = None  # ElevenLabs: the `text` to speak
    choices: int = 1  # OpenAI's `n`: that many outputs, each up to the cap
    seconds: float | None = None  # of video asked for (OpenAI's `seconds`)
    hidden_output: int = 0  # output billed but not streamed (Claude 4's thinking: a summary)
    tools: bool = False  # it offers tools (Anthropic adds a system prompt for them)
    searches: int | None = 0  # web searches its server tools may run; None: without bound
    size: int = 0  # the body's bytes (an upload's bound its audio's seconds)
    key_seconds: int | None = None  # a minted credential: how long it can be spent with


def read_body(body: bytes) -> tuple[RequestFacts, dict[str, Any] | None]:
    """The facts, and the parsed JSON object (None when the body is not one)."""
    data: Any = None
    if body.lstrip()[:1] == b"{":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
    if not isinstance(data, dict):
        return RequestFacts(input_bound=len(body), size=len(body)), None
    return facts_of(data, len(body)), data


def facts_of(data: dict[str, Any], size: int, *, form: bool = False) -> RequestFacts:
    """What a request's fields say (a JSON body's, or a form's: `form`, whose input is bounded
    by its size, files included)."""
    model = data.get("model", data.get("model_id"))
    caps = [
        v for f in TOKEN_FIELDS if isinstance(v := data.get(f), int) and not isinstance(v, bool)
    ]
    text = data.get("text", data.get("input"))  # ElevenLabs' `text`, OpenAI speech's `input`
    n = data.get("n")
    thinking = data.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    choices = n if type(n) is int and n > 1 else 1
    if gemini.is_request(data):  # its cap is nested; without one, the model's own most
        cap, candidates = gemini.output(data)
        caps.append(cap)
        choices = max(choices, candidates)
    return RequestFacts(
        model=model if isinstance(model, str) else None,
        max_output=max(caps) if caps else None,
        input_bound=size if form else _input_bound(data),
        text_chars=len(text) if isinstance(text, str) else None,
        choices=choices,
        seconds=seconds_of(data.get("seconds")),
        size=size,
        hidden_output=budget if type(budget) is int and budget > 0 else 0,
        tools=bool(data.get("tools")),
        searches=searches_of(data),
    )


def _input_bound(value: Any, key: str = "") -> int:
    """No token is shorter than a byte (tokenizers work on UTF-8: a rare character may be four
    tokens): the body's bytes bound its input tokens, except inline images and files (base64),
    which cost at most IMAGE_TOKENS each."""
    if isinstance(value, str):
        if len(value) > _INLINE_DATA and (key == "data" or value.startswith("data:")):
            return IMAGE_TOKENS
        return _utf8(value) + 1
    if isinstance(value, dict):
        return sum(_utf8(k) + _input_bound(v, k) for k, v in value.items()) + 1
    if isinstance(value, list):
        return sum(_input_bound(v) for v in value) + 1
    return 1


def web_search(tool: Any) -> bool:
    """A server tool that searches the web, billed per search (Anthropic's `web_search_*`)."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    return isinstance(kind, str) and kind.startswith("web_search")


def searches_of(data: dict[str, Any]) -> int | None:
    """How many searches its web search tools may run: the sum of their `max_uses`; None when
    one names no bound (a JSON integer of at least 0, as Anthropic reads it)."""
    tools = data.get("tools")
    total = 0
    for tool in tools if isinstance(tools, list) else ():
        if web_search(tool):
            uses = tool.get("max_uses")
            if type(uses) is not int or uses < 0:
                return None
            total += uses
    return total


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def output_tokens(facts: RequestFacts, output_cap: int | None) -> int:
    """The most output tokens one choice may make: the body's cap, else the provider's
    `validation.max_tokens`, else DEFAULT_OUTPUT_TOKENS (sent as the cap, where the profile
    names its field, so that the provider cannot make more)."""
    return facts.max_output or output_cap or DEFAULT_OUTPUT_TOKENS


def worst_case(
    price: Price | None, facts: RequestFacts, output_cap: int | None, method: str
) -> int:
    """Nano-dollars a request can cost at most, before it is sent. `output_cap`: the
    provider's validation.max_tokens, when the body names none."""
    if price is None:
        return 0
    if facts.key_seconds is not None:  # a minted key: the session it enables, by the minute
        return math.ceil(facts.key_seconds * price.minute / 60 * NANO)
    if price.prediction:  # EachLabs: a create makes one prediction, its price the model's dearest
        return math.ceil(price.prediction * NANO) if method == "POST" else 0
    if price.by_endpoint:
        return math.ceil(price.reserve * price.unit * NANO) if method == "POST" else 0
    if price.image:
        return math.ceil(facts.choices * price.image * NANO)
    if price.second:  # video asked for by length; else audio, bounded by the upload's size
        seconds = facts.seconds
        if seconds is None:
            seconds = facts.size / AUDIO_BYTES_PER_SECOND
        return math.ceil(facts.choices * seconds * price.second * NANO)
    if price.characters:
        chars = facts.text_chars if facts.text_chars is not None else facts.input_bound
        return math.ceil(chars * price.characters * _PER_MILLION)
    output = output_tokens(facts, output_cap) * facts.choices
    input_price = max(price.input, price.cache_write, price.cache_read)
    per_million = facts.input_bound * input_price + output * price.output
    return math.ceil(per_million * _PER_MILLION + (facts.searches or 0) * price.search * NANO)
