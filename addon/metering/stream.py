"""Usage from a server-sent event stream, read as it passes, chunk by chunk.

Only a partial line is ever kept (at most MAX_LINE bytes). Anthropic: `message_start` carries
the input and cache counts, `message_delta` the output so far (cumulative: the last one wins),
`message_stop` ends it. OpenAI chat completions: the usage-only chunk before `[DONE]`. OpenAI
Responses API: `response.completed` (or `.incomplete` / `.failed`). Gemini (`?alt=sse`): every
event's `usageMetadata` (cumulative: the last wins); it ends when every candidate has its
`finishReason`, or the prompt was blocked.

For an OpenAI chat completion whose client did not ask for usage, keyrelay asked for it
(`stream_options.include_usage`) and `strip` takes out what that added: the usage-only chunk
and the `"usage":null` member of every other chunk, so the client gets the bytes it would have
got. Then each line goes out as soon as it is complete (a partial line waits for its end);
otherwise every chunk goes out untouched and at once.
"""

from __future__ import annotations

import json
import re
from typing import Any

from addon.metering.usage import INPUT, OUTPUT, Usage, normalise, normalise_gemini

MAX_LINE = 1 << 20
_NULL_USAGE = (
    re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])'),
    re.compile(rb'(?<=\{)\s*"usage"\s*:\s*null\s*,\s*'),
)
_ENDS = ("response.completed", "response.incomplete", "response.failed")
_CONTENT = ("text", "partial_json", "thinking", "signature", "data")


class StreamMeter:
    def __init__(self, *, strip: bool = False) -> None:
        self.usage: Usage = {}
        self.model: str | None = None
        self.complete = False  # the provider's final usage arrived
        self._strip = strip
        self._partial = b""
        self._overlong = False  # inside a line past MAX_LINE: not parsed
        self._drop_blank = False  # after a dropped usage chunk: its blank terminator too
        self.anthropic = False  # an Anthropic message stream (message_start seen)
        self._finished: dict[int, bool] = {}  # Gemini: each candidate seen, whether it ended
        self.streamed = 0  # UTF-8 bytes of generated content passed on (Anthropic)

    def __call__(self, chunk: bytes) -> bytes:
        """What goes on to the client; b"" at the end of the stream flushes."""
        if not chunk:
            rest, self._partial = self._partial, b""
            if rest and not self._overlong:
                rest = self._line(rest, b"")
            return rest if self._strip else b""
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        tail = lines.pop()
        out = []
        for line in lines:
            if self._overlong:
                self._overlong = False
                out.append(line + b"\n")
            else:
                out.append(self._line(line, b"\n"))
        if len(tail) > MAX_LINE:
            self._overlong = True
            out.append(tail)
            tail = b""
        self._partial = tail
        if not self._strip:
            return chunk
        return b"".join(out)

    def _line(self, line: bytes, end: bytes) -> bytes:
        """One complete line: metered, and (strip) what the client gets of it."""
        bare = line.rstrip(b"\r")
        if not bare:
            if self._drop_blank:
                self._drop_blank = False
                return b""
            return line + end
        if bare.startswith(b"event:") and bare[6:].strip() == b"message_stop":
            self.complete = True
        if not bare.startswith(b"data:"):
            return line + end
        if self.anthropic and b'"content_block_' in bare:
            self._content(_json(bare[5:]))
            return line + end
        if b'"usage' not in bare and not self._strip:  # "usage" or Gemini's "usageMetadata"
            if b'"message_stop"' in bare:
                self.complete = True
            return line + end
        event = _json(bare[5:])
        if event is None:
            return line + end
        if self._read(event) and self._strip:
            self._drop_blank = True
            return b""
        if self._strip and event.get("usage", 0) is None:
            for pattern in _NULL_USAGE:
                line, n = pattern.subn(b"", line, count=1)
                if n:
                    break
        return line + end

    def _read(self, event: dict[str, Any]) -> bool:
        """Meter one event; True when it is a usage-only chat completion chunk."""
        kind = event.get("type")
        if kind == "message_start" and isinstance(message := event.get("message"), dict):
            self.anthropic = True
            self._model(message.get("model"))
            self.usage.update(normalise(message.get("usage")))
        elif kind == "message_stop":
            self.complete = True
        elif kind in _ENDS and isinstance(response := event.get("response"), dict):
            self._model(response.get("model"))
            self.usage.update(normalise(response.get("usage")))
            self.complete = True
        elif event.get("object") == "chat.completion.chunk":
            self._model(event.get("model"))
            if isinstance(event.get("usage"), dict):
                self.usage.update(normalise(event["usage"]))
                self.complete = True
                return event.get("choices") == []
        elif isinstance(metadata := event.get("usageMetadata"), dict):  # Gemini
            self._model(event.get("modelVersion"))
            if usage := normalise_gemini(metadata):
                self.usage = usage
            self.complete = self._gemini_ended(event)
        elif isinstance(event.get("usage"), dict):  # message_delta, and anything alike
            self.usage.update(normalise(event["usage"]))
        return False

    def _gemini_ended(self, event: dict[str, Any]) -> bool:
        """Every candidate seen so far has its finishReason (index 0 may go unnamed), or the
        prompt was blocked: then this event's usage is the final one."""
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            return True
        candidates = event.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if isinstance(candidate, dict):
                index = candidate.get("index")
                index = index if isinstance(index, int) else 0
                ended = self._finished.get(index, False) or bool(candidate.get("finishReason"))
                self._finished[index] = ended
        return bool(self._finished) and all(self._finished.values())

    def _content(self, event: dict[str, Any] | None) -> None:
        """The bytes of what a content block event carries: text, tool input, thinking, a
        signature, redacted thinking. No token is shorter than a byte of the text it stands for,
        so they bound the output tokens generated so far from above."""
        if event is None:
            return
        part = event.get("delta") if event.get("type") == "content_block_delta" else None
        if part is None:
            part = event.get("content_block")
        if isinstance(part, dict):
            for name in _CONTENT:
                if isinstance(value := part.get(name), str):
                    self.streamed += len(value.encode("utf-8", "surrogatepass"))

    def cut_usage(self, margin: int) -> Usage | None:
        """For a stream cut before its final usage: the usage it cannot have exceeded, where
        the stream tells enough (Anthropic: the input from `message_start`, the output bounded
        by the bytes generated plus `margin` tokens not yet passed on). None: it does not."""
        if not self.anthropic or INPUT not in self.usage:
            return None
        return {**self.usage, OUTPUT: max(self.usage.get(OUTPUT, 0), self.streamed + margin)}

    def _model(self, model: Any) -> None:
        if isinstance(model, str) and self.model is None:
            self.model = model


def _json(data: bytes) -> dict[str, Any] | None:
    data = data.strip()
    if not data.startswith(b"{"):
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
