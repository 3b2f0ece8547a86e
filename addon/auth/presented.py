"""Finding the credential a client presents to keyrelay: a header, else a cookie, else (a
browser's WebSocket, which cannot set headers) a subprotocol (config/credential.py). When there
is none, `missing` says why and where keyrelay looks, for the 401 (never the credential)."""

from __future__ import annotations

from collections.abc import Callable

from addon.config.auth import AuthSpec
from addon.config.credential import (
    CLIENT_CREDENTIAL_HEADERS,
    WEBSOCKET_PROTOCOLS,
    protocol_credential,
    protocols,
)

Header = Callable[[str], str | None]
SUBPROTOCOL = "a WebSocket subprotocol"
# Credential headers of one provider's API or another that a client may send keyrelay's token in
# by mistake (an SDK's apiKey): named in the 401 when keyrelay reads another place.
_ELSEWHERE = sorted(CLIENT_CREDENTIAL_HEADERS - {"cookie", WEBSOCKET_PROTOCOLS})


def presented(spec: AuthSpec, header: Header) -> str | None:
    """The credential from spec.header ('Bearer X' for Authorization), else from spec.cookie."""
    found = presented_at(spec, header)
    return found[0] if found is not None else None


def presented_at(spec: AuthSpec, header: Header) -> tuple[str, str] | None:
    """The credential and where it was found (a place for a 401's detail, never the value)."""
    value = header(spec.header)
    if value is not None:
        if spec.header == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            value = token
        return (value.strip(), _header_place(spec)) if value.strip() else None
    if spec.cookie is not None and (found := cookie_value(header("cookie") or "", spec.cookie)):
        return found, f"the cookie {spec.cookie}"
    if (header("upgrade") or "").strip().lower() == "websocket":
        for protocol in protocols(header(WEBSOCKET_PROTOCOLS)):
            if (carried := protocol_credential(protocol)) is not None:
                return carried, SUBPROTOCOL
    return None


def missing(spec: AuthSpec, header: Header) -> str:
    """Why a request without a credential keyrelay reads has none, and where keyrelay looks: a
    token in another provider's key header (an SDK's `apiKey`) or another Authorization scheme
    is named by its header, never shown."""
    bearer = " as Bearer <token>" if spec.header == "authorization" else ""
    where = [f"{_header_place(spec)}{bearer}"]
    if spec.cookie is not None:
        where.append(f"the cookie {spec.cookie}")
    where.append(f"{SUBPROTOCOL} keyrelay-token.<token>")
    looks = f"keyrelay looks in {', '.join(where[:-1])} or {where[-1]}"
    if spec.header == "authorization" and header("authorization") is not None:
        return f"the Authorization header is not Bearer <token>; {looks}"
    sent = [name for name in _ELSEWHERE if name != spec.header and header(name) is not None]
    if sent:
        return f"a credential came in {', '.join(sent)}, which keyrelay does not read; {looks}"
    return f"no credentials were sent; {looks}"


def _header_place(spec: AuthSpec) -> str:
    name = "Authorization" if spec.header == "authorization" else spec.header
    return f"the {name} header"


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
