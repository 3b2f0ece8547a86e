"""Header lookups by name in one pass over the fields, not one pass per lookup.

mitmproxy's `Headers.get` converts and compares every field's name on every call, and a request
is looked up about ten times on its way through `requestheaders`. The index is built once per
fields tuple, the same answers as `Headers.get` (repeated names joined with ", "), and built
anew whenever the tuple is replaced (as routing does when it rewrites a request), so it is
never stale.
"""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

_KEPT = 512  # indexes held at most (a few per request in flight)
_indexes: dict[int, tuple[http.Headers, tuple[tuple[bytes, bytes], ...], dict[str, str]]] = {}


def lookup(headers: http.Headers) -> Callable[[str], str | None]:
    """`Headers.get`, for the headers as they are now; names in lower case."""
    return index(headers).get


def asks_for_websocket(headers: http.Headers) -> bool:
    """Whether a request head asks to upgrade to a WebSocket."""
    return (lookup(headers)("upgrade") or "").lower() == "websocket"


def content(message: http.Message) -> bytes | None:
    """`message.get_content(strict=False)`, without its scan of the headers when nothing is
    encoded (the common case: keyrelay asks upstreams for identity)."""
    if lookup(message.headers)("content-encoding"):
        return message.get_content(strict=False)
    return message.raw_content


def index(headers: http.Headers) -> dict[str, str]:
    fields = headers.fields
    held = _indexes.get(id(headers))
    if held is not None and held[0] is headers and held[1] is fields:
        return held[2]
    built: dict[str, str] = {}
    for raw_name, raw_value in fields:
        name = raw_name.decode("utf-8", "surrogateescape").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        built[name] = f"{built[name]}, {value}" if name in built else value
    if len(_indexes) >= _KEPT:
        _indexes.clear()
    _indexes[id(headers)] = (headers, fields, built)
    return built
