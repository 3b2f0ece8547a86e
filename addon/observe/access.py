"""One access log line, the metrics and mitmweb's at-a-glance summary, for every flow.

Per-flow bookkeeping (bytes streamed, which open-streams gauge a flow holds) stays in memory,
keyed by flow id, and is dropped when the flow ends. The log line is masked with every secret
the flow may carry (masking.py), though it is built from fields that should hold none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addons import termlog

from addon import errorpage, flowstate, header_index, peer
from addon.auth.identity import anonymous
from addon.config.credential import CLIENT_CREDENTIAL_HEADERS
from addon.config.provider import Provider
from addon.config.rules import Rules
from addon.flowlocal import FlowLocal
from addon.observe import accesslog, metrics, redaction, telemetry_attrs
from addon.observe.telemetry import Telemetry
from addon.ratelimit.limiter import RATE_LIMITED
from addon.transport.component import add_stage

access_logger = logging.getLogger("keyrelay.access")
logger = logging.getLogger(__name__)

REFUSED_MARK = ":no_entry_sign:"
ERROR_MARK = ":warning:"


@dataclass
class _Live:
    sent: _Sent
    streamed_bytes: int = 0
    streaming: str | None = None  # the provider whose open-streams gauge this flow holds
    first_chunk: float | None = None  # time.time() of a streamed answer's first chunk out


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the client sent, before routing rewrites it: references, nothing copied."""

    method: str
    authority: str | None  # its Host header
    path: str
    fields: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(cls, flow: http.HTTPFlow) -> _Sent:
        request = flow.request
        host = header_index.lookup(request.headers)("host")  # Request.host_header, one scan
        if request.is_http2 or request.is_http3:
            host = request.authority or host
        return cls(request.method, host, request.path, request.headers.fields)

    def url(self, flow: http.HTTPFlow) -> str:
        scheme = "https" if flow.client_conn.tls_established else "http"
        return f"{scheme}://{self.authority or '-'}{self.path}"

    def headers(self, names: frozenset[bytes]) -> list[tuple[str, str]]:
        return [
            (k.decode("latin-1"), v.decode("utf-8", "replace"))
            for k, v in self.fields
            if k.lower() in names
        ]


class AccessLog:
    def __init__(
        self,
        rules: Callable[[], Rules | None],
        masks: Callable[[http.HTTPFlow], redaction.Masks],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._rules = rules
        self._masks = masks
        self._telemetry = telemetry  # OpenTelemetry, fed each entry when it exports
        self._live: FlowLocal[_Live] = FlowLocal("access.live", walked=True)
        self._output = accesslog.Output(access_logger)
        self._format = "text"  # keyrelay_access_log, read once per change, not per request

    def load(self, loader: Any) -> None:
        loader.add_option(
            "keyrelay_access_log",
            str,
            "text",
            "One line per request: text, json or off.",
            choices=list(accesslog.FORMATS),
        )
        loader.add_option(
            "keyrelay_access_log_file",
            str,
            "",
            "Also append each access log line to this file (bare lines, no log prefix).",
        )
        self._output.print_to(_terminal_stream())

    def configure(self, updated: set[str]) -> None:
        if "keyrelay_access_log" in updated:
            self._format = ctx.options.keyrelay_access_log
        if {"keyrelay_access_log", "keyrelay_access_log_file"} & updated:
            path = ctx.options.keyrelay_access_log_file
            log_file = Path(path).expanduser() if path and self._format != "off" else None
            if log_file and not log_file.parent.is_dir():
                raise exceptions.OptionsError(
                    f"keyrelay_access_log_file: {log_file.parent} is not a directory"
                )
            try:
                self._output.append_to(log_file)
            except OSError as e:
                raise exceptions.OptionsError(
                    f"keyrelay_access_log_file: {log_file} cannot be opened: {e.strerror}"
                ) from None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._live.set(flow, _Live(_Sent.of(flow)))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Last of all: count the bytes that really go out, and the open streams."""
        live = self._live.get(flow)
        response = flow.response
        if live is None or response is None or not response.stream:
            return
        provider = flowstate.of(flow).get("provider") or metrics.NO_PROVIDER

        def counted(data: bytes) -> bytes:
            if live.first_chunk is None and data:
                live.first_chunk = time.time()
            live.streamed_bytes += len(data)
            return data

        add_stage(response, "count", counted)
        live.streaming = provider
        metrics.stream_opened(provider)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        """A failed flow: mitmproxy answers it with an error page right after this hook
        (errorpage.py); its line waits for that page, so it has the status the client got
        (502, 504), and goes out without one when no page is sent (the client left)."""
        self._finish(flow, None, failed=True)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """A metered session's second line, at its end, when it used anything (its first went
        out at the 101): the session's usage, cost and model (budget/sessions.py put them in
        the flow's state), its whole duration. Counted in the usage metrics and traced, not as
        another request."""
        state = flowstate.of(flow)
        if not (state.get("usage") or state.get("cost")):
            return  # nothing used (or a WebSocket no session meters)
        entry = self._entry(flow, None, None)
        entry.duration_ms = (time.time() - entry.time) * 1000
        masks = self._masks(flow)
        traced = self._telemetry is not None and self._telemetry.exporter is not None
        call = self._call(flow, entry, None) if traced else None
        _Line(self, entry, state.get("key_id"), masks, call, session_end=True).write()

    def done(self) -> None:
        for flow, _ in self._live.items():
            self._finish(flow, "still open at shutdown")  # type: ignore[arg-type]
        self._output.close()

    def _finish(self, flow: http.HTTPFlow, note: str | None, *, failed: bool = False) -> None:
        live = self._live.pop(flow)
        if live and live.streaming:
            metrics.stream_closed(live.streaming)
        entry = self._entry(flow, live, note)
        masks = self._masks(flow)  # now: masking forgets the flow's secrets once it ends
        self._summarise(flow, entry, live.sent if live else None, masks)
        traced = self._telemetry is not None and self._telemetry.exporter is not None
        call = self._call(flow, entry, live) if traced else None
        line = _Line(self, entry, flowstate.of(flow).get("key_id"), masks, call)
        task = _hook_task() if failed and entry.status is None else None
        if task is not None and errorpage.when_sent(flow, line.answered):
            task.add_done_callback(line.written_at_last)
            return
        line.write()

    def _write(self, line: _Line) -> None:
        """The line, its counts, and its span: once its status is known."""
        entry = line.entry
        if line.session_end:
            _count_usage(entry)
        else:
            self._count(entry, line.key_id)
        text = accesslog.render(entry, self._format)  # None, at no cost, when the log is off
        if text is not None:
            self._output.write(redaction.scrub_text(text, line.masks))
        if line.call is not None and self._telemetry is not None:
            self._telemetry.record(entry, line.call)

    def _call(
        self, flow: http.HTTPFlow, entry: accesslog.Entry, live: _Live | None
    ) -> telemetry_attrs.Call:
        """What a span adds to the entry: the call's name, its profile, the model asked for,
        when a streamed answer's first chunk went out."""
        state = flowstate.of(flow)
        provider = _provider(self._rules(), entry.provider)
        first = live.first_chunk if live else None
        return telemetry_attrs.Call(
            operation=state.get("operation"),
            profile=provider.catalogue.profile if provider else None,
            request_model=state.get("request_model"),
            first_chunk_ms=(first - entry.time) * 1000 if first is not None else None,
        )

    def _entry(self, flow: http.HTTPFlow, live: _Live | None, note: str | None) -> accesslog.Entry:
        state = flowstate.of(flow)
        request, response = flow.request, flow.response
        decision: str = state.get("decision", "error")
        refusal = state.get("reason") if decision == "refused" else None
        if decision == "forwarded" and flow.is_replay == "response":
            decision = "replayed"
        forwarded = decision in ("forwarded", "replayed")
        start = request.timestamp_start
        end = (response.timestamp_end if response else None) or time.time()
        head = response.timestamp_start if response else None
        sent_out = len(response.raw_content) if response and response.raw_content else 0
        if live and live.streaming and live.streamed_bytes:
            # (A response an addon set, such as a replayed one, goes out whole: no chunks.)
            sent_out = live.streamed_bytes
        error = note or (flow.error.msg if flow.error else None)
        return accesslog.Entry(
            time=start,
            identity=str(state.get("identity") or _peer_ip(flow)),
            provider=state.get("provider"),
            method=request.method,
            host=request.host if forwarded else None,  # keyrelay set it (and Host) when routing
            path=request.path.partition("?")[0],
            status=response.status_code if response and not flow.error else None,
            bytes_in=len(request.raw_content or b""),
            bytes_out=sent_out,
            duration_ms=(end - start) * 1000,
            ttfb_ms=(head - start) * 1000 if head and forwarded else None,
            decision="refused" if refusal else ("error" if error else decision),
            refusal=refusal,
            detail=state.get("detail") if refusal else None,
            error=error,
            usage=state.get("usage"),
            cost=state.get("cost"),
            model=state.get("model"),
            charged=state.get("charged"),
        )

    def _summarise(
        self,
        flow: http.HTTPFlow,
        entry: accesslog.Entry,
        sent: _Sent | None,
        masks: redaction.Masks,
    ) -> None:
        """What mitmweb shows at a glance, the decision first (its comment column is cut off):
        `refused: <reason>`, `forwarded`, `error`...; then provider, rule, identity; then what
        the client sent (mitmweb shows the request as keyrelay forwarded it), its credential
        masked. A request keyrelay answered itself shows the URL the client called."""
        provider = _provider(self._rules(), entry.provider)
        parts = [
            f"refused: {entry.refusal}" if entry.refusal else entry.decision,
            f"provider: {entry.provider or '-'}",
            f"rule: {_rule(provider)}",
            f"identity: {entry.identity}",
        ]
        if entry.cost is not None:
            parts.append(f"cost: ${entry.cost:.6f} ({accesslog.escape(entry.model or '-')})")
        if entry.error:
            parts.append(f"error: {entry.error}")
        if sent is not None:
            url = sent.url(flow)
            answered = flowstate.of(flow).get("decision") != "forwarded"  # by keyrelay
            if answered and sent.authority:
                with contextlib.suppress(ValueError):  # a Host no URL can hold: left as it is
                    flow.request.url = url  # not the reverse-mode target nor a sentinel host

            def esc(text: str) -> str:  # masked, then escaped: all of it the client chose
                return accesslog.escape(redaction.scrub_text(text, masks))

            headers = "".join(
                f" {esc(k)}: {_masked(v, masks) if k.lower().encode() in _CREDENTIALS else esc(v)}"
                for k, v in sent.headers(_CREDENTIALS | _target_header(provider))
            )
            parts.append(f"sent: {esc(sent.method)} {esc(url)}{headers}")
        flow.comment = " | ".join(parts)
        if entry.refusal:
            flow.marked = REFUSED_MARK
        elif entry.error and not flow.marked:
            flow.marked = ERROR_MARK

    def _count(self, entry: accesslog.Entry, key_id: str | None) -> None:
        metrics.request_done(entry.provider, entry.status)
        if entry.refusal:
            metrics.refused(entry.refusal)
            if entry.refusal == RATE_LIMITED and entry.provider:
                metrics.rate_limited(entry.provider)
        if key_id and entry.provider and entry.decision == "forwarded":
            metrics.key_used(entry.provider, key_id, entry.status)
        metrics.body_bytes(entry.provider, entry.bytes_in, entry.bytes_out)
        _count_usage(entry)
        if entry.provider and entry.decision in ("forwarded", "replayed"):
            metrics.upstream_timing(
                entry.provider,
                entry.duration_ms / 1000 if entry.duration_ms is not None else None,
                entry.ttfb_ms / 1000 if entry.ttfb_ms is not None else None,
            )


@dataclass
class _Line:
    """One flow's line and counts, written once: at once, or (a failed flow) when its error
    page is sent, with its status, or when the hook's task ends without one."""

    log: AccessLog
    entry: accesslog.Entry
    key_id: str | None
    masks: redaction.Masks
    call: telemetry_attrs.Call | None = None  # a span's facts, when telemetry is on
    session_end: bool = False  # a metered WebSocket's line at its end: its usage, not a request
    written: bool = False

    def answered(self, status: int) -> None:
        self.entry.status = status
        self.write()

    def written_at_last(self, _task: object) -> None:
        self.write()  # no page was sent: the line goes without a status

    def write(self) -> None:
        if not self.written:
            self.written = True
            self.log._write(self)


def _count_usage(entry: accesslog.Entry) -> None:
    if entry.provider and entry.usage is not None:
        metrics.usage(entry.provider, entry.model or "-", entry.usage, entry.cost or 0.0)


def _hook_task() -> asyncio.Task[Any] | None:
    """The `error` hook's task: mitmproxy sends the error page before it ends (even when it
    ran the hook eagerly, inside another task's event: it then waits for that one)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no loop: a test, or shutting down
        return None


def _terminal_stream() -> IO[str] | None:
    """Where mitmdump and mitmweb print their log; None without one (the console UI)."""
    root = logging.getLogger().handlers
    return next((h.file for h in root if isinstance(h, termlog.TermLogHandler)), None)


def _peer_ip(flow: http.HTTPFlow) -> str:
    """An anonymous caller, spelt as auth/identity.py spells it."""
    return str(anonymous(peer.address(flow)))


def _masked(value: str, masks: redaction.Masks) -> str:
    """A client credential by its placeholder; one the masks do not know (too long to
    remember) by a bare one."""
    found = _PLACEHOLDER.search(redaction.scrub_text(value, masks))
    return found[0] if found else "<client credential>"  # the placeholder, nothing else


_PLACEHOLDER = re.compile(r"<client [^<>\s]+ [^<>\s]+>")  # redaction.client_credentials
_CREDENTIALS = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)


def _target_header(provider: Provider | None) -> frozenset[bytes]:
    header = provider.target_header if provider else None
    return frozenset({header.encode()}) if header else frozenset()


def _provider(rules: Rules | None, name: str | None) -> Provider | None:
    if rules is None or name is None:
        return None
    return next((p for p in rules.providers if p.name == name), None)


def _rule(provider: Provider | None) -> str:
    if provider is None:
        return "-"
    if provider.prefix:
        return f"prefix {provider.prefix}"
    names = [f"header {provider.target_header}"] if provider.target_header else []
    names += [f"query {provider.target_query}"] if provider.target_query else []
    return " or ".join(names)
