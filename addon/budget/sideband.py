"""WebRTC calls keyrelay brokered, metered from OpenAI's sideband and hung up when the money or
the time runs out.

A browser's call (`POST /v1/realtime/calls`, budget/call_offer.py) sends its media and its
events straight to OpenAI: keyrelay sees neither. For each call it answered, keyrelay opens
the call's sideband itself, a WebSocket with the server's key
(`wss://api.openai.com/v1/realtime?call_id=<id>`, the `openai` SDK's `realtime.connect(call_id=)`),
on which OpenAI sends the call's server events. The call is metered there as a WebSocket session
is (budget/sessions.py: the same reservations and settlements, from `response.created` and
`response.done`), and hung up (`POST /v1/realtime/calls/<id>/hangup`, the SDK's
`calls.hangup`) when:
- the next response cannot be covered (a response that starts uncovered is charged its worst
  case);
- the call's model changes to one `models:` forbids or that the budget cannot price at its
  reserved worst case, or it turns on input transcription under a budget (billed apart);
- the call has lasted `validation.max_credential_seconds` (what a browser is handed to talk to
  the provider directly lives no longer, a minted key or a call);
- the sideband cannot be opened or is lost (the call could no longer be metered), or keyrelay
  shuts down.

After a hangup the sideband is read a little longer, so the responses still running settle at
the usage they report; what is still running when it ends is charged its reservation.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import certifi
import h11
from mitmproxy import ctx, http
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from addon import flowstate, tasks
from addon.budget.calls import Call
from addon.budget.sessions import Session, Sessions
from addon.flowlocal import FlowLocal
from addon.guard import body_rules, call_offer
from addon.metering import prices, realtime
from addon.problems import Refusal

logger = logging.getLogger(__name__)

AFTER_HANGUP = 10.0  # seconds the sideband is still read for the responses running to end
OPEN_TIMEOUT = 10.0  # seconds to open the sideband, or to have a hangup answered
# Server events the sideband reads (the rest, transcripts and the like, are not parsed).
_MARKERS = (*realtime.MARKERS, b"session.updated")


@dataclass(frozen=True)
class Reach:
    """How keyrelay reaches the provider itself: where to connect (`keyrelay_connect_to`
    applied), the name for SNI, Host and the certificate check, and the TLS context
    mitmproxy's upstream options make."""

    host: str
    address: tuple[str, int]
    tls: ssl.SSLContext


@dataclass(frozen=True)
class Brokered:
    """A call keyrelay answered: what its sideband needs."""

    call_id: str
    # The provider's credential header, as injected: a secret, never in a repr.
    credential: tuple[str, str] = field(repr=False)
    reach: Reach
    base: str  # the provider's path before /realtime (OpenAI's /v1)
    seconds: int  # the call's time cap

    def path(self, tail: str) -> str:
        return f"{self.base}/realtime{tail}"


class Sideband:
    """One call's sideband: read, metered, and the call hung up when it must be."""

    def __init__(
        self, sessions: Sessions, call: Call, session: Session, brokered: Brokered
    ) -> None:
        self.call, self.session, self.brokered = call, session, brokered
        self._sessions = sessions
        self._hung_at: float | None = None
        self.why: str | None = None  # why keyrelay hung the call up

    async def run(self) -> None:
        """Until the sideband ends; then the call is hung up (it is no longer metered) and what
        its session still holds is settled."""
        try:
            try:
                await self._listen()
            except Exception as e:  # fail closed: whatever it was, the call does not go on
                # The type only: its text may quote the URL's call id or an address.
                logger.warning("keyrelay: a call's sideband failed: %s", type(e).__name__)
            await self.hang_up("sideband-ended")
        finally:
            release(self._sessions, self.call, self.session)

    async def _listen(self) -> None:
        brokered = self.brokered
        reach = brokered.reach
        url = f"wss://{reach.host}{brokered.path('')}?call_id={brokered.call_id}"
        async with connect(
            url,
            additional_headers=[brokered.credential],
            user_agent_header=None,
            proxy=None,  # the provider as keyrelay reaches it, not an environment proxy
            open_timeout=OPEN_TIMEOUT,
            max_size=realtime.MAX_EVENT,
            ssl=reach.tls,
            server_hostname=reach.host,
            host=reach.address[0],
            port=reach.address[1],
        ) as ws:
            await self._read(ws)

    async def _read(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        cap_at = loop.time() + self.brokered.seconds
        while True:
            hung = self._hung_at
            try:
                async with asyncio.timeout_at(cap_at if hung is None else hung + AFTER_HANGUP):
                    message = await ws.recv()
            except TimeoutError:
                if self._hung_at is not None:
                    return
                await self.hang_up("time-cap")
                continue
            except ConnectionClosed:
                return
            content = message.encode() if isinstance(message, str) else b""
            if any(marker in content for marker in _MARKERS):
                await self.event(content)

    async def event(self, content: bytes) -> None:
        """One server event of the call, as the sideband sent it."""
        event = realtime.event_of(content) if len(content) <= realtime.MAX_EVENT else None
        if event is None:
            return
        call, session, kind = self.call, self.session, event["type"]
        response = event.get("response")
        rid = response.get("id") if isinstance(response, dict) else None
        if kind in ("session.created", "session.updated"):
            if why := self._refused_config(event.get("session")):
                await self.hang_up(why)
        elif kind == "response.created" and isinstance(rid, str):
            held = await self._sessions.start(call, session)
            if held is None:
                # It runs uncovered: charged its worst case, and the call ends now.
                session.running[rid] = ("", session.worst())
                await self.hang_up("budget-exhausted")
            else:
                session.running[rid] = held
        elif kind == "response.done":
            settled = await self._sessions.settle_response(call, session, event, rid)
            if settled is not None and settled.exhausted:
                await self.hang_up("budget-exhausted")

    def _refused_config(self, config: object) -> str | None:
        """Why the call's session, as OpenAI reports it, may not go on; else None (a new model
        that is allowed and no dearer is taken)."""
        if not isinstance(config, dict):
            return None
        call, session = self.call, self.session
        provider = call.provider
        if session.limited and realtime.transcribes(config):
            return "unpriced"  # transcription is billed apart from responses, unmetered
        model = config.get("model")
        if not isinstance(model, str) or model == session.model:
            return None
        if refusal := body_rules.check_model(provider.validation, {"model": model}):
            return refusal.reason
        price = prices.price_for(provider.prices, model, call.endpoint)
        if session.limited:
            if price is None or not price.covers("session"):
                return "unpriced"
            if realtime.worst_case(price, session.cap, session.context) > session.worst():
                return "unpriced"  # dearer than what its reservations assume
        session.model, session.price, call.model = model, price, model
        return None

    async def hang_up(self, why: str) -> None:
        """Once: the provider asked to end the call."""
        if self._hung_at is not None:
            return
        self._hung_at = asyncio.get_running_loop().time()
        self.why = why
        self.session.ended = True
        logger.info("keyrelay: a brokered call hung up: %s", why)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                status = await _post(
                    self.brokered, f"/v1/realtime/calls/{self.brokered.call_id}/hangup"
                )
        except (OSError, TimeoutError, h11.ProtocolError) as e:
            logger.error("keyrelay: a call's hangup failed: %s", type(e).__name__)
            return
        if status >= 300:  # the call may have ended already (its browser left)
            logger.warning("keyrelay: a call's hangup was answered %d", status)


def is_offer(call: Call) -> bool:
    """A WebRTC call's offer (`kind: call`), not a WebSocket session."""
    return call.operation is not None and call.operation.kind == "call"


def release(sessions: Sessions, call: Call, session: Session) -> None:
    """What a call's session still holds, settled (spawned: it outlives a cancel at shutdown)."""
    _, writes = sessions.release(call, session)
    for write in writes:
        tasks.spawn(write())


def upstream_tls() -> ssl.SSLContext:
    """The certificate check mitmproxy's options ask of an upstream."""
    options = ctx.options
    cafile = options.ssl_verify_upstream_trusted_ca or None
    capath = options.ssl_verify_upstream_trusted_confdir or None
    if cafile is None and capath is None:
        cafile = certifi.where()  # mitmproxy's own default (mitmproxy/net/tls.py)
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    if options.ssl_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _post(brokered: Brokered, path: str) -> int:
    """An empty POST to the provider with its key; the answer's status."""
    reach = brokered.reach
    reader, writer = await asyncio.open_connection(
        *reach.address, ssl=reach.tls, server_hostname=reach.host
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        headers = [
            ("host", reach.host),
            brokered.credential,
            ("content-length", "0"),
            ("connection", "close"),
        ]
        writer.write(conn.send(h11.Request(method="POST", target=path, headers=headers)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                return event.status_code
            if isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("closed before an answer")
    finally:
        writer.close()


Where = Callable[[str, int], tuple[str, int]]  # the address keyrelay connects to for a host
Answer = Callable[[http.HTTPFlow, Refusal], None]  # relay.answer: the flow is answered instead


def _answer_bare(flow: http.HTTPFlow, refusal: Refusal) -> None:
    """Until relay.py sets relay.answer (which also logs the reason and adds CORS): the refusal
    alone, never the provider's answer."""
    headers = {"content-type": "application/json"}
    flow.response = http.Response.make(refusal.status, refusal.body(), headers)


UNMETERED_CALL = Refusal(
    502,
    "call-not-metered",
    "the provider answered the call without its id, so keyrelay could neither meter nor end "
    "it; its answer was not passed on, and the call does not start",
)


class Sidebands:
    """The calls keyrelay brokers: each offer's session held until its answer, then each call's
    sideband while it lasts (its leases renewed with the others'); at shutdown each call still
    running is hung up, since keyrelay would no longer meter it (a SIGTERM's drain first waits
    for calls as for requests in flight, up to keyrelay_drain_timeout)."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._credentials: FlowLocal[tuple[str, str]] = FlowLocal("budget.call_credentials")
        self._running: dict[asyncio.Task[None], Sideband] = {}
        self.where: Where = lambda host, port: (host, port)  # relay.py: keyrelay_connect_to
        self.refuse: Answer = _answer_bare  # relay.py: relay.answer

    # -- the offer and its answer -------------------------------------------------------------

    async def offer(self, flow: http.HTTPFlow, call: Call, limited: bool) -> Refusal | None:
        """`request`: the session the call will be metered as, its first response reserved."""
        request, provider = flow.request, call.provider
        content_types = request.headers.get_all("content-type")
        query = request.path.partition("?")[2]
        read = call_offer.offer_of(content_types, request.raw_content or b"", query)
        if isinstance(read, Refusal):
            return read
        config, model = read
        if limited and config is not None and realtime.transcribes(config):
            return Refusal(
                403,
                "unpriced",
                f"{provider.name}: input audio transcription is billed apart from responses, "
                "unmetered, so under a budget it is refused",
            )
        if model is None:
            if not limited:
                return None  # nothing to meter or to hold it to
            return Refusal(
                403,
                "model-required",
                "a metered call's offer must name its model (the session part's model, or "
                "?model=): its price depends on it",
            )
        credential = request.headers.get(provider.credential.header)
        if credential is None:  # injected in requestheaders: never so
            return Refusal(500, "internal-error", "keyrelay could not broker this call")
        # Reserved at OpenAI's most output: the browser sets its own cap over its data channel.
        opened = await self._sessions.begin(call, flow.id, model, limited, realtime.MAX_OUTPUT)
        if isinstance(opened, Refusal):
            return opened
        self._sessions.keep(flow, opened)
        self._credentials.set(flow, (provider.credential.header, credential))
        return None

    def answered(self, flow: http.HTTPFlow, call: Call) -> bool:
        """`response`: a call answered has its sideband opened; any other answer releases what
        the offer held. False: the flow is no call's offer."""
        if not is_offer(call):
            return False
        session = self._sessions.take(flow)
        credential = self._credentials.pop(flow)
        if session is None:
            return True  # an offer with nothing to meter
        response, request = flow.response, flow.request
        answered = response is not None and 200 <= response.status_code < 300
        call_id = None
        if response is not None and answered:
            call_id = call_offer.call_id(response.headers.get("location"))
        flowstate.of(flow)["model"] = session.model[:100]
        if call_id is None or credential is None:
            if answered:
                # Neither metered nor ended without its id: the browser does not get the answer
                # it would connect with (the call at the provider then never starts).
                logger.error("keyrelay: a call was answered without its id: refused")
                self.refuse(flow, UNMETERED_CALL)
            release(self._sessions, call, session)
            return True
        reach = Reach(request.host, self.where(request.host, request.port), upstream_tls())
        base = request.path.partition("?")[0].rpartition("/realtime/calls")[0]
        seconds = call.provider.validation.max_credential_seconds
        self.start(call, session, Brokered(call_id, credential, reach, base, seconds))
        return True

    def unanswered(self, flow: http.HTTPFlow, call: Call) -> bool:
        """`error`: an offer that got no answer releases what it held. False: no offer."""
        if not is_offer(call):
            return False
        self._credentials.pop(flow)
        if (session := self._sessions.take(flow)) is not None:
            release(self._sessions, call, session)
        return True

    # -- the calls ----------------------------------------------------------------------------

    def start(self, call: Call, session: Session, brokered: Brokered) -> None:
        sideband = Sideband(self._sessions, call, session, brokered)
        task = tasks.spawn(sideband.run())
        if task is None:
            return
        self._running[task] = sideband
        task.add_done_callback(self._running.pop)

    def __len__(self) -> int:
        """Calls running: a drain waits for them as for requests in flight."""
        return len(self._running)

    def held(self) -> list[tuple[Call, list[str]]]:
        """Each call's leases, for the budget's renewals."""
        return [(s.call, leases) for s in self._running.values() if (leases := s.session.leases())]

    async def stop(self, timeout: float) -> None:
        """Shutdown: every call hung up, what it held settled (a response still running after
        `timeout` is charged its reservation)."""
        running = list(self._running.items())
        if not running:
            return
        hangups = [asyncio.ensure_future(s.hang_up("shutdown")) for _, s in running]
        await asyncio.wait(hangups, timeout=timeout)
        _, pending = await asyncio.wait([task for task, _ in running], timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
