"""Ending a WebSocket from keyrelay's side: a last message to the client, then a close frame with
a code and reason to both peers (mitmproxy 12 offers message injection, not a close).

`say_and_close(flow, message, code, reason)` injects `message` toward the client through
mitmproxy's `inject.websocket` command; when that message passes `websocket_message` (`closing`
finds it there), a close event is queued behind it on the WebSocket layer's server side, as if
the upstream had closed with that code: mitmproxy relays the message, then the close to both
peers, closes both connections and runs `websocket_end`. The layer reads its queued events one
at a time, so the close is taken after the message has gone out.

This reaches into mitmproxy's internals (the connection handler's layers, the HTTP layer's
streams, the WebSocket layer's wsproto connections): installed only through addon/engine, on
the versions its fingerprints were checked on. Elsewhere the message is still sent and the
caller is told no close will come (`False`): it must then drop what the client sends.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.proxy.layers.http import HttpLayer
from mitmproxy.proxy.layers.websocket import WebsocketLayer
from wsproto.events import CloseConnection

from addon import engine
from addon.flowlocal import FlowLocal

logger = logging.getLogger(__name__)

_pending: FlowLocal[tuple[bytes, int, str]] = FlowLocal("transport.websocket_close")


def say_and_close(flow: http.HTTPFlow, message: bytes, code: int, reason: str) -> bool:
    """Send `message` to the client, then close with `code` and `reason`. False: the close
    cannot be made on this mitmproxy (the message is still sent)."""
    closable = engine.checked("websocket_close") and _layer(flow) is not None
    if closable:
        _pending.set(flow, (message, code, reason[:120]))  # a close reason is at most 123 bytes
    say(flow, message)
    return closable


def say(flow: http.HTTPFlow, message: bytes, *, upstream: bool = False) -> None:
    """Send the client (or the upstream) a text message of keyrelay's own (mitmproxy's
    `inject.websocket`)."""
    ctx.master.commands.call("inject.websocket", flow, not upstream, message)


def closing(flow: http.HTTPFlow) -> None:
    """websocket_message: when the message passing is the one `say_and_close` sent, queue the
    close behind it."""
    assert flow.websocket is not None
    message = flow.websocket.messages[-1]
    pending = _pending.get(flow)
    if pending is None or not message.injected or message.from_client:
        return
    content, code, reason = pending
    if message.content != content:
        return
    _pending.pop(flow)
    layer = _layer(flow)
    if layer is not None:
        # The server side's wsproto connection: its queue is read after this message is sent.
        layer.server_ws._events.append(CloseConnection(code=code, reason=reason))


def forget(flow: http.HTTPFlow) -> None:
    """websocket_end: a close that never came (the socket ended first)."""
    _pending.pop(flow)


def _layer(flow: http.HTTPFlow) -> Any:
    """The WebSocket layer relaying this flow, or None."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
    if handler is None:
        return None
    for layer in handler.layer.context.layers:
        if isinstance(layer, HttpLayer):
            for stream in layer.streams.values():
                if stream.flow is flow and isinstance(stream.child_layer, WebsocketLayer):
                    return stream.child_layer
    return None
