"""What a budget refuses, and why: what keyrelay cannot meter or price, counts it will not
guess at, and requests the books cannot cover (now: 429 with a wait; never: 403 without)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mitmproxy import http

from addon import header_index
from addon.budget.books import Period
from addon.metering import gemini, prices
from addon.problems import Refusal
from addon.routing.router import Route

EXHAUSTED = "budget-exhausted"

# Tools the provider runs and bills per use, beyond tokens (Anthropic's server tools, OpenAI's
# built-in tools); client tools (functions, bash, text editor) cost only their tokens. Web
# search is metered when its `max_uses` bounds it (prices.searches_of); the others are refused.
_PAID_TOOLS = (
    "web_search",
    "web_fetch",
    "code_execution",
    "code_interpreter",
    "file_search",
    "image_generation",
    "mcp",
)

# Fields that add a stored context, billed as input, that the body does not show (Responses API).
_STORED_CONTEXT = ("previous_response_id", "conversation")


def unmeterable(request: http.Request, route: Route) -> Refusal | None:
    """Under a budget: what keyrelay cannot meter is refused, never free."""
    operation = route.operation
    if header_index.asks_for_websocket(request.headers):
        if operation is not None and operation.meter == "session":
            return None  # its messages are metered (budget/sessions.py)
        why = f"{route.provider.name}: a WebSocket's usage is not metered"
        return _refused(why, reason="websocket-unmetered")
    if operation is None or operation.meter is None:
        what = operation.name if operation else f"{request.method} {route.host}"
        return _refused(f"{route.provider.name}: {what} cannot be priced by keyrelay")
    return None


def unreadable(data: dict[str, Any]) -> Refusal | None:
    """Counts that set the worst case, read as the provider reads them; a background job."""
    if problem := prices.invalid_count(data):
        return Refusal(400, "invalid-count", problem)
    if data.get("background") is True:
        return _refused("a background response's usage arrives after its answer")
    if prices.searches_of(data) is None:
        return _refused(
            "a web search tool without a max_uses (a whole number) may search without bound, "
            "each search billed",
            advice="set max_uses",
        )
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(_PAID_TOOLS) and not prices.web_search(tool):
            return _refused(
                f"the {kind[:60]!r} tool is billed per use, which keyrelay does not meter"
            )
    if gemini.is_request(data) and (problem := gemini.unpriced(data)):
        return _refused(problem)
    for name in _STORED_CONTEXT:
        if data.get(name) is not None:
            return _refused(
                f"{name} bills a stored context of unknown size as input",
                advice="send the conversation in the request instead",
            )
    return None


def unpriced(provider: str, operation: str, what: str) -> Refusal:
    return _refused(f"{provider}: {operation} for {what[:100]!r} has no price in rules.yaml")


def _refused(why: str, *, reason: str = "unpriced", advice: str = "") -> Refusal:
    """403: what keyrelay cannot price is refused under a budget, never free."""
    then = f": {advice}" if advice else ""
    return Refusal(403, reason, f"{why}, so under a budget it is refused{then}")


def exhausted(period: Period, now: datetime) -> Refusal:
    wait = period.seconds_left(now)
    resets = period.resets.isoformat().replace("+00:00", "Z")
    return Refusal(
        429,
        EXHAUSTED,
        f"the {period.name} budget cannot cover this request; it resets at {resets}",
        headers=(("retry-after", str(wait)),),
    )


def exceeds(period: Period, amount: int, limit: int, left: int) -> Refusal:
    """403: no wait makes this request fit (429 with Retry-After would have clients wait for
    nothing)."""
    return Refusal(
        403,
        "request-exceeds-budget",
        f"this request may cost up to ${prices.usd(amount)}, more than the whole "
        f"{period.name} budget (${prices.usd(limit)}; ${prices.usd(left)} left): lower "
        "max_tokens (or the request's other counts)",
    )
