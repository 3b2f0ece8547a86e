"""Finding the credential a client presents to keyrelay: a header, else a cookie, else (a
browser's WebSocket, which cannot set headers) a subprotocol (config/credential.py)."""

from __future__ import annotations

from collections.abc import Callable

from addon.config.auth import AuthSpec
from addon.config.credential import WEBSOCKET_PROTOCOLS, protocol_credential, protocols


def presented(spec: AuthSpec, header: Callable[[str], str | None]) -> str | None:
    """The credential from spec.header ('Bearer X' for Authorization), else from spec.cookie."""
    value = header(spec.header)
    if value is not None:
        if spec.header == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
        return value.strip() or None
    if spec.cookie is not None and (found := cookie_value(header("cookie") or "", spec.cookie)):
        return found
    if (header("upgrade") or "").strip().lower() == "websocket":
        for protocol in protocols(header(WEBSOCKET_PROTOCOLS)):
            if (carried := protocol_credential(protocol)) is not None:
                return carried
    return None


def cookie_value(cookie_header: str, name: str) -> str | None:
    """The first cookie called `name` in a Cookie header (RFC 6265 section 5.4 syntax)."""
    for pair in cookie_header.split(";"):
        key, eq, value = pair.strip().partition("=")
        if eq and key == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None
