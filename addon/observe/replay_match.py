"""Which recorded request a live one replays, and what the nearest one differs in. Pure.

A request is compared by method, host, port, path, query and body, as mitmproxy's server replay
does, except that the query is compared as a set of pairs and a JSON body by value: key order
and spacing never matter (a browser's `JSON.stringify` never matches Python's spacing byte for
byte). Headers are not compared, so the injected key does not matter.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

COMPARED = "method, host, path, query and body (JSON by value)"


@dataclass(frozen=True, slots=True)
class Shape:
    """What a request is matched on."""

    method: str
    host: str
    port: int
    path: str
    query: tuple[tuple[str, str], ...]
    body: Any  # the parsed JSON, or the raw bytes

    @classmethod
    def of(cls, method: str, host: str, port: int, target: str, content: bytes) -> Shape:
        path, _, query = target.partition("?")
        pairs = tuple(sorted(parse_qsl(query, keep_blank_values=True)))
        return cls(method.upper(), host.lower(), port, path, pairs, _body(content))

    def key(self) -> tuple[object, ...]:
        body = self.body
        if not isinstance(body, bytes):
            body = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return (self.method, self.host, self.port, self.path, self.query, body)

    def differences(self, other: Shape) -> list[str]:
        """What `other` differs in, by name only (values may be secret)."""
        found = [
            name
            for name in ("method", "host", "port", "path")
            if getattr(self, name) != getattr(other, name)
        ]
        if self.query != other.query:
            mine, theirs = dict(self.query), dict(other.query)
            names = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            found.append("query " + ", ".join(names))
        if self.body != other.body:
            if isinstance(self.body, dict) and isinstance(other.body, dict):
                keys = self.body.keys() | other.body.keys()
                names = sorted(k for k in keys if self.body.get(k) != other.body.get(k))
                found.append("JSON body " + ", ".join(names))
            else:
                found.append("body")
        return found


def _body(content: bytes) -> Any:
    if content.lstrip()[:1] in (b"{", b"["):
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content


class Recording[T]:
    """Recorded requests and their answers: each served once, in order (or again and again
    with `reuse`)."""

    def __init__(self, entries: list[tuple[Shape, T]], *, reuse: bool = False) -> None:
        self.shapes = [shape for shape, _ in entries]
        self.reuse = reuse
        self._left: dict[tuple[object, ...], deque[T]] = {}
        for shape, answer in entries:
            self._left.setdefault(shape.key(), deque()).append(answer)

    def __len__(self) -> int:
        return sum(len(q) for q in self._left.values())

    def take(self, shape: Shape) -> T | None:
        left = self._left.get(shape.key())
        if not left:
            return None
        return left[0] if self.reuse else left.popleft()

    def why_not(self, shape: Shape) -> str:
        """The detail of a request no recorded answer is left for."""
        asked = f"{shape.method} {shape.host}{shape.path}"
        if not self.shapes:
            return f"replay mode: the recording holds no replayable response for {asked}"
        nearest = min((s.differences(shape) for s in self.shapes), key=len)
        if not nearest:
            return (
                f"replay mode: the recorded response to {asked} was served already "
                "(each is served once; --set server_replay_reuse=true serves them again)"
            )
        return (
            f"replay mode: no recorded request matches {asked} (compared: {COMPARED}); "
            f"the nearest differs in {'; '.join(nearest)}"
        )
