"""Seeing traffic: keyrelay's endpoints, the access log, metrics, mitmweb's flow summary, and
masking every secret before a flow is stored or shown. relay.py calls one method per hook.

Per-flow bookkeeping that holds a secret (the client's credential) stays in this object's
memory, keyed by flow id, and is dropped when the flow ends; flow.metadata never holds one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from mitmproxy import ctx, exceptions, http, io
from mitmproxy.addons import termlog
from mitmproxy.proxy import server_hooks

from addon import accesslog, endpoints, metrics, redaction, replay
from addon.keys import KeyStore
from addon.problems import Refusal
from addon.ratelimit.limiter import RATE_LIMITED
from addon.rules import Provider, Rules

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("keyrelay.access")

STATE = "keyrelay"
_NO_SECRETS: Mapping[str, str] = MappingProxyType({})
REFUSED_MARK = ":no_entry_sign:"
ERROR_MARK = ":warning:"

Current = Callable[[], tuple[Rules | None, KeyStore | None]]
Answer = Callable[[http.HTTPFlow, Refusal], None]


@dataclass
class _Live:
    flow: http.HTTPFlow
    client_secrets: dict[str, str]
    streamed_bytes: int = 0
    streaming: str | None = None  # the provider whose open-streams gauge this flow holds


@dataclass(frozen=True, slots=True)
class _OwnSecrets:
    rules: Rules | None
    held: Mapping[str, str]  # what KeyStore.secrets() answered: the same object until a change
    secrets: dict[str, str]
    masks: redaction.Masks


class Observer:
    def __init__(self, current: Current, answer: Answer) -> None:
        self._current = current
        self._answer = answer
        self._live: dict[str, _Live] = {}
        self._output = accesslog.Output(access_logger)
        self._format = "text"  # keyrelay_access_log, read once per change, not per request
        self._own: _OwnSecrets | None = None

    # -- options -----------------------------------------------------------------------------

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
        loader.add_option(
            "keyrelay_replay",
            bool,
            False,
            "Replay mode (with server_replay=FILE): placeholder keys, never the network.",
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

    @property
    def replaying(self) -> bool:
        return bool(ctx.options.keyrelay_replay)

    def keyed_rules(self, rules: Rules) -> Rules:
        """The rules whose keys the KeyStore should load: placeholders in replay mode."""
        return replay.offline(rules) if self.replaying else rules

    # -- hooks ---------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> bool:
        """Before routing. Remembers the client's credential (to mask it later) and answers
        keyrelay's own endpoints. True when the flow is answered."""
        rules, keys = self._current()
        secrets = redaction.client_credentials(flow.request.headers)
        self._live[flow.id] = _Live(flow, secrets)
        if not endpoints.is_admin_path(flow.request.path) or rules is None:
            return False
        admin = rules.admin
        result = endpoints.serve(
            admin,
            admin.token_value(rules.env),
            flow.request.method,
            flow.request.path,
            _peer_ip(flow),
            flow.request.headers.get("authorization"),
            lambda: {p.name: bool(keys and keys.key_for(p)) for p in rules.providers},
        )
        if isinstance(result, Refusal):
            self._answer(flow, result)
        else:
            flow.response = http.Response.make(
                result.status, result.body, {"content-type": result.content_type}
            )
            flow.metadata.setdefault(STATE, {})["decision"] = "admin"
        return True

    def running(self) -> None:
        if self.replaying:
            self._load_recording()

    def _load_recording(self) -> None:
        """Give server_replay only the responses keyrelay forwarded. A recorded refusal or
        health answer must not stand in for what keyrelay decides now: mitmproxy's replay
        replaces any response an addon set, and matching ignores headers (so credentials)."""
        try:
            flows = io.read_flows_from_paths(ctx.options.server_replay)
        except exceptions.FlowReadException as e:
            raise exceptions.OptionsError(f"server_replay: {e}") from e
        forwarded = [
            f
            for f in flows
            if isinstance(f, http.HTTPFlow)
            and f.response is not None
            and f.metadata.get(STATE, {}).get("decision") == "forwarded"
        ]
        ctx.master.commands.call("replay.server", forwarded)
        logger.info(
            "keyrelay: replaying %d recorded responses (%d flows skipped: not forwarded)",
            len(forwarded),
            len(flows) - len(forwarded),
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """After the response head is settled: count streamed bytes and open streams."""
        live = self._live.get(flow.id)
        response = flow.response
        if live is None or response is None or not response.stream:
            return
        inner = response.stream
        provider = _state(flow).get("provider") or metrics.NO_PROVIDER
        # A key an upstream echoes must not reach the client either: the head goes out right
        # after this hook, the body chunk by chunk. Only keyrelay's own secrets: the client's
        # are the client's to see, and they would let it choose what the stream waits for.
        secrets = self._own_secrets().masks
        redaction.scrub_headers(response.headers, secrets)
        scrub = redaction.StreamScrubber(secrets)

        def counted(chunk: bytes) -> bytes | Iterable[bytes]:
            out = inner(chunk) if callable(inner) else chunk
            data = scrub(out if isinstance(out, bytes) else b"".join(out), end=not chunk)
            if not data and chunk:
                return []  # an empty chunk would end an HTTP/1 body early
            live.streamed_bytes += len(data)
            return data

        response.stream = counted
        live.streaming = provider
        metrics.stream_opened(provider)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """Save writes a WebSocket flow again at its end, messages included: mask them too."""
        redaction.scrub_flow(flow, self._own_secrets().masks)

    def done(self) -> None:
        """Flows still open at shutdown are saved by Save's `done`, after this: mask them now."""
        for live in list(self._live.values()):
            self._finish(live.flow, "still open at shutdown")
        self._output.close()

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self.replaying:
            data.server.error = replay.NOT_RECORDED

    # -- closing the books -----------------------------------------------------------------------

    def _finish(self, flow: http.HTTPFlow, note: str | None) -> None:
        live = self._live.pop(flow.id, None)
        if live and live.streaming:
            metrics.stream_closed(live.streaming)
        secrets = self._secrets(live)
        # First: nothing after this may leave a key behind.
        redaction.scrub_flow(flow, self._own_secrets().masks, secrets)
        redaction.scrub_oversized_credentials(flow.request.headers)
        try:
            entry = self._entry(flow, live, note)
            self._summarise(flow, entry)
            self._count(entry, _state(flow).get("key_id"))
            self._log(entry, secrets)
        except Exception:
            logger.exception("keyrelay: could not log or count a request")

    def _secrets(self, live: _Live | None) -> redaction.Masks:
        """Every secret this flow may carry, made ready once for all of its fields."""
        ours = self._own_secrets()
        if live is None or not live.client_secrets:
            return ours.masks
        return redaction.Masks({**live.client_secrets, **ours.secrets})

    def _own_secrets(self) -> _OwnSecrets:
        """The admin token and every key: the same until the rules or a key change."""
        rules, keys = self._current()
        held = keys.secrets() if keys is not None else _NO_SECRETS
        cached = self._own
        if cached is not None and cached.rules is rules and cached.held is held:
            return cached
        secrets: dict[str, str] = {}
        if rules is not None and (token := rules.admin.token_value(rules.env)):
            secrets[token] = "<KEYRELAY_ADMIN_TOKEN>"
        secrets.update(held)
        self._own = _OwnSecrets(rules, held, secrets, redaction.Masks(secrets))
        return self._own

    def _entry(self, flow: http.HTTPFlow, live: _Live | None, note: str | None) -> accesslog.Entry:
        state = _state(flow)
        request, response = flow.request, flow.response
        decision = str(state.get("decision", "error"))
        refusal = decision.partition("refused: ")[2] or None
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
            error=error,
        )

    def _summarise(self, flow: http.HTTPFlow, entry: accesslog.Entry) -> None:
        """What mitmweb shows at a glance: provider, rule, identity, decision."""
        rules, _ = self._current()
        provider = _provider(rules, entry.provider)
        parts = [
            f"provider: {entry.provider or '-'}",
            f"rule: {_rule(provider)}",
            f"identity: {entry.identity}",
            f"decision: {entry.decision}",
        ]
        if entry.refusal:
            parts.append(f"reason: {entry.refusal}")
        if entry.error:
            parts.append(f"error: {entry.error}")
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
        if entry.provider and entry.decision in ("forwarded", "replayed"):
            metrics.upstream_timing(
                entry.provider,
                entry.duration_ms / 1000 if entry.duration_ms is not None else None,
                entry.ttfb_ms / 1000 if entry.ttfb_ms is not None else None,
            )

    def _log(self, entry: accesslog.Entry, secrets: redaction.Masks) -> None:
        line = accesslog.render(entry, self._format)  # None, at no cost, when the log is off
        if line is not None:
            self._output.write(redaction.scrub_text(line, secrets))


def _terminal_stream() -> IO[str] | None:
    """Where mitmdump and mitmweb print their log; None without one (the console UI)."""
    root = logging.getLogger().handlers
    return next((h.file for h in root if isinstance(h, termlog.TermLogHandler)), None)


def _state(flow: http.HTTPFlow) -> dict[str, Any]:
    return flow.metadata.setdefault(STATE, {})


def _peer_ip(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "-"


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
