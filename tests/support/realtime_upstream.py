"""A fake OpenAI Realtime server (GA interface, as the `openai` SDK's realtime types spell it):
a TLS WebSocket that speaks the documented events and bills each response as OpenAI does, from
the tokens it reports and its own price list.

- On connect: `session.created` (output cap `inf`, server voice activity detection on).
- `session.update`: the model and output cap taken; `session.updated` with the session.
- `conversation.item.create`: the item's text joins the conversation; `conversation.item.created`.
- `input_audio_buffer.append` / `commit`: audio joins the conversation (a token per 100 bytes
  of base64); with voice activity detection on, a commit starts a response of the server's own.
- `response.create`: a response, `response.created`, deltas, `response.done`.

And WebRTC calls, as the `openai` SDK's `realtime.calls` spells them, over HTTP on the same port:
- `POST /v1/realtime/calls` (the SDP offer alone, or multipart with `sdp` and `session` parts):
  `201` with an SDP answer and `Location: /v1/realtime/calls/rtc_...`;
- the call's sideband, `GET /v1/realtime?call_id=rtc_...` (a WebSocket): `session.created`,
  then the call's server events;
- `POST /v1/realtime/calls/{call_id}/hangup`: recorded (`hangups`); the call ends and its
  sideband is closed.
The browser's side of a call (its audio, its data channel) is the test's: `respond` makes a
response as a user's turn would (billed as above), `update` reports a `session.updated` the
browser's own `session.update` caused, `leave` ends the call as a browser that hangs up does.

A response reads the whole conversation as input (text and audio tokens; what earlier
responses read is cached, OpenAI's prompt cache) and makes `3 x` the last text's length in
output tokens, at most its cap, a third text and the rest audio; it joins the conversation.
Every response's bill is recorded in USD (`bills`), computed here from the usage it reports.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import queue
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from support.tls import TlsMaterial
from support.transport import JsonMessages, WebSocketUpstream


def metered_socket(reserve: int) -> dict[str, Any]:
    """The OpenAI profile's `realtime.socket` operation metered as a session, each response
    reserved at `reserve` input tokens (rules' `operations:`)."""
    return {
        "op": "GET api.openai.com/v1/realtime",
        "kind": "stream",
        "meter": "session",
        "reserve": reserve,
    }


@dataclass(frozen=True)
class Rates:
    """USD per million tokens, as OpenAI lists gpt-realtime's."""

    text_in: float = 4.0
    text_cached: float = 0.4
    audio_in: float = 32.0
    audio_cached: float = 0.4
    text_out: float = 16.0
    audio_out: float = 64.0

    def bill(self, usage: dict[str, Any]) -> float:
        inputs, outputs = usage["input_token_details"], usage["output_token_details"]
        cached = inputs["cached_tokens_details"]
        per_million = (
            (inputs["text_tokens"] - cached["text_tokens"]) * self.text_in
            + cached["text_tokens"] * self.text_cached
            + (inputs["audio_tokens"] - cached["audio_tokens"]) * self.audio_in
            + cached["audio_tokens"] * self.audio_cached
            + outputs["text_tokens"] * self.text_out
            + outputs["audio_tokens"] * self.audio_out
        )
        return per_million / 1e6

    def prices(self, model: str = "*") -> dict[str, Any]:
        """The same list as a keyrelay `prices:` entry."""
        return {
            "model": model,
            "input": self.text_in,
            "cache_read": self.text_cached,
            "output": self.text_out,
            "audio_input": self.audio_in,
            "audio_cache_read": self.audio_cached,
            "audio_output": self.audio_out,
        }


@dataclass
class _Conversation:
    model: str
    cap: int | str = "inf"
    vad: bool = True
    text: int = 0  # tokens of text in the conversation
    audio: int = 0  # tokens of audio
    cached_text: int = 0  # read by an earlier response: cached
    cached_audio: int = 0
    last_text: str = ""
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


ANSWER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
DEFAULT_MODEL = "gpt-realtime"  # what OpenAI runs for a call whose offer names no model


@dataclass
class Offer:
    """A call's offer as it arrived: its target, lower-cased headers and body."""

    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Call:
    conv: _Conversation
    outbox: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)  # None: close
    attached: threading.Event = field(default_factory=threading.Event)  # its sideband is open
    ended: bool = False
    bills: list[float] = field(default_factory=list)


class RealtimeUpstream(WebSocketUpstream):
    def __init__(self, tls: TlsMaterial, rates: Rates = Rates()) -> None:
        super().__init__(tls)
        self.rates = rates
        self.received: list[dict[str, Any]] = []  # every client event, in order
        self.bills: list[float] = []  # USD per response made
        self.closes: list[tuple[int, str]] = []  # close frames received
        self.offers: list[Offer] = []  # WebRTC offers, in order
        self.calls: dict[str, _Call] = {}  # by call id
        self.hangups: list[tuple[str, dict[str, str]]] = []  # (call id, headers)
        self.sideband_refused: int | None = None  # the status a call's sideband is refused with
        self.no_location = False  # a call answered without its Location (so without its id)
        self._lock = threading.Lock()
        self._call_ids = itertools.count(1)

    @property
    def billed(self) -> float:
        with self._lock:
            return sum(self.bills)

    timeout = 10.0

    def subprotocol(self, offered: list[str]) -> str | None:
        """OpenAI answers `realtime` when a client offers it (its browser SDKs do, beside the
        key): a browser fails a socket whose answer names none of those it offered."""
        return "realtime" if "realtime" in offered else None

    def _handle(self, sock: ssl.SSLSocket) -> None:
        """HTTP/1.1 requests (kept alive) until one asks for a WebSocket."""
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, rest = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            if headers.get("upgrade", "").lower() == "websocket":
                if "call_id" in parse_qs(urlsplit(target).query):
                    self._sideband(sock, buffer)
                else:
                    self._session(sock, buffer)
                return
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                data = sock.recv(65536)
                if not data:
                    return
                rest += data
            body, buffer = rest[:length], rest[length:]
            sock.sendall(self._http(method, target, headers, body))

    def _http(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        path = urlsplit(target).path
        if method == "POST" and path == "/v1/realtime/calls":
            return self._offer(target, headers, body)
        call_id = path.removeprefix("/v1/realtime/calls/").removesuffix("/hangup")
        if method == "POST" and path.endswith("/hangup") and call_id in self.calls:
            self.hangups.append((call_id, headers))
            self._end(call_id)
            return _answer(200, "text/plain", b"")
        return _answer(404, "application/json", b'{"error": {"message": "not found"}}')

    def _offer(self, target: str, headers: dict[str, str], body: bytes) -> bytes:
        self.offers.append(Offer(target, headers, body))
        kind = headers.get("content-type", "")
        session: dict[str, Any] = {}
        if kind.startswith("multipart/form-data"):
            form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"content-type: " + kind.encode() + b"\r\n\r\n" + body
            )
            parts = {
                p.get_param("name", header="content-disposition"): p for p in form.iter_parts()
            }
            sdp = parts["sdp"].get_payload(decode=True)
            if "session" in parts:
                session = json.loads(parts["session"].get_payload(decode=True))
        else:
            sdp = body
        if not sdp.startswith(b"v=0"):
            return _answer(400, "application/json", b'{"error": {"message": "bad offer"}}')
        query = parse_qs(urlsplit(target).query)
        model = session.get("model") or query.get("model", [DEFAULT_MODEL])[0]
        call_id = f"rtc_{next(self._call_ids):04d}abcdef"
        self.calls[call_id] = _Call(_Conversation(model, session.get("max_output_tokens", "inf")))
        location = [] if self.no_location else [("location", f"/v1/realtime/calls/{call_id}")]
        return _answer(201, "application/sdp", ANSWER.encode(), location)

    def _sideband(self, sock: ssl.SSLSocket, first: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(first)
        call = None
        for event in ws.events():
            if isinstance(event, Request):
                call_id = parse_qs(urlsplit(event.target).query)["call_id"][0]
                headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
                self.handshakes.append((event.target, headers))
                call = self.calls.get(call_id)
                if call is None or call.ended or self.sideband_refused:
                    status = self.sideband_refused or 404
                    sock.sendall(ws.send(RejectConnection(status_code=status)))
                    return
                sock.sendall(ws.send(AcceptConnection()))
        assert call is not None
        send = ws.send
        sock.sendall(send(Message(data=json.dumps(_created(call.conv)))))
        call.attached.set()
        sock.settimeout(0.05)
        while not self._stop.is_set():
            while not call.outbox.empty():
                out = call.outbox.get()
                if out is None:
                    sock.sendall(send(CloseConnection(code=1000, reason="call ended")))
                else:
                    sock.sendall(send(Message(data=json.dumps(out))))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Ping):
                    sock.sendall(send(event.response()))
                elif isinstance(event, CloseConnection):
                    if ws.state.name == "REMOTE_CLOSING":
                        sock.sendall(send(event.response()))
                    return

    # -- the browser's side of a call ---------------------------------------------------------

    def attached(self, call_id: str) -> bool:
        """Whether the call's sideband is open (waited for, a few seconds at most)."""
        return self.calls[call_id].attached.wait(10)

    def respond(self, call_id: str, text: str) -> bool:
        """A user's turn of `text`: a response, made and billed. False: the call has ended."""
        call = self.calls[call_id]
        if call.ended:
            return False
        conv = call.conv
        conv.text += len(text)
        conv.last_text = text
        before = len(self.bills)
        self._respond(conv, {}, call.outbox.put)
        with self._lock:
            call.bills.extend(self.bills[before:])
        return True

    def update(self, call_id: str, **session: Any) -> None:
        """The browser changed its session over its data channel: OpenAI reports it."""
        call = self.calls[call_id]
        call.conv.model = session.get("model", call.conv.model)
        shown = {**_shown(call.conv), **session}
        call.outbox.put({"type": "session.updated", "event_id": "e9", "session": shown})

    def leave(self, call_id: str) -> None:
        """The browser hung up: the call ends, its sideband closed."""
        self._end(call_id)

    def _end(self, call_id: str) -> None:
        call = self.calls[call_id]
        if not call.ended:
            call.ended = True
            call.outbox.put(None)

    def _session(self, sock: ssl.SSLSocket, first: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        conv: _Conversation | None = None
        messages = JsonMessages()

        def send(event: dict[str, Any]) -> None:
            sock.sendall(ws.send(Message(data=json.dumps(event))))

        for event in self.events(sock, ws, first):
            if isinstance(event, Request):
                model = event.target.partition("model=")[2].partition("&")[0]
                conv = _Conversation(model)
                send(_created(conv))
            elif (
                isinstance(event, TextMessage)
                and conv is not None
                and (got := messages.add(event)) is not None
            ):
                self.received.append(got)
                self._event(conv, got, send)
            elif isinstance(event, CloseConnection):
                self.closes.append((event.code, event.reason))
                if ws.state.name == "REMOTE_CLOSING":
                    sock.sendall(ws.send(event.response()))
                return

    def _event(self, conv: _Conversation, got: dict[str, Any], send: Any) -> None:
        kind = got["type"]
        if kind == "session.update":
            session = got["session"]
            conv.model = session.get("model", conv.model)
            conv.cap = session.get("max_output_tokens", conv.cap)
            if "turn_detection" in session.get("audio", {}).get("input", {}):
                conv.vad = session["audio"]["input"]["turn_detection"] is not None
            send({"type": "session.updated", "event_id": "e1", "session": _shown(conv)})
        elif kind == "conversation.item.create":
            text = "".join(c.get("text", "") for c in got["item"].get("content", []))
            conv.text += len(text)
            conv.last_text = text
            send({"type": "conversation.item.created", "event_id": "e2", "item": got["item"]})
        elif kind == "input_audio_buffer.append":
            conv.audio += len(got["audio"]) // 100
        elif kind == "input_audio_buffer.commit":
            send({"type": "input_audio_buffer.committed", "event_id": "e3", "item_id": "i1"})
            if conv.vad:
                self._respond(conv, {}, send)
        elif kind == "response.create":
            self._respond(conv, got.get("response") or {}, send)

    def _respond(self, conv: _Conversation, config: dict[str, Any], send: Any) -> None:
        rid = f"resp_{next(conv.ids)}"
        cap = config.get("max_output_tokens", conv.cap)
        limit = cap if isinstance(cap, int) else 4096
        response = {"id": rid, "object": "realtime.response", "status": "in_progress"}
        send({"type": "response.created", "event_id": "e4", "response": response})
        out = min(limit, 3 * max(1, len(conv.last_text)))
        text_out = out // 3
        audio_out = out - text_out
        send({"type": "response.output_text.delta", "event_id": "e5", "delta": "hi"})
        usage = {
            "total_tokens": conv.text + conv.audio + out,
            "input_tokens": conv.text + conv.audio,
            "output_tokens": out,
            "input_token_details": {
                "text_tokens": conv.text,
                "audio_tokens": conv.audio,
                "image_tokens": 0,
                "cached_tokens": conv.cached_text + conv.cached_audio,
                "cached_tokens_details": {
                    "text_tokens": conv.cached_text,
                    "audio_tokens": conv.cached_audio,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        with self._lock:
            self.bills.append(self.rates.bill(usage))
        done = {**response, "status": "completed", "usage": usage}
        send({"type": "response.done", "event_id": "e6", "response": done})
        conv.cached_text, conv.cached_audio = conv.text, conv.audio
        conv.text += text_out  # the answer joins the conversation
        conv.audio += audio_out


def _answer(
    status: int, kind: str, body: bytes, extra: list[tuple[str, str]] | None = None
) -> bytes:
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {kind}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _created(conv: _Conversation) -> dict[str, Any]:
    return {"type": "session.created", "event_id": "e0", "session": _shown(conv)}


def _shown(conv: _Conversation) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": conv.model,
        "max_output_tokens": conv.cap,
        "output_modalities": ["audio"],
    }
