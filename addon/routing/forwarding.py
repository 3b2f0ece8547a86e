"""What goes upstream: the client's headers minus credentials, account choices (which
organisation or project a key acts for), browser context and hop-by-hop headers, then the
provider's policy, then the key; its query minus credentials. Pure: works on (name, value) byte
pairs and the request target's text."""

from __future__ import annotations

from collections.abc import Iterable

from addon.config.credential import (
    CLIENT_ACCOUNT_HEADERS,
    CLIENT_CREDENTIAL_HEADERS,
    WEBSOCKET_PROTOCOLS,
    is_credential_param,
    upstream_protocols,
)
from addon.config.provider import Provider

HeaderFields = tuple[tuple[bytes, bytes], ...]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "http2-settings"}
)
# Message framing must survive any allowlist, or streamed uploads break.
FRAMING = frozenset({"content-length", "transfer-encoding"})
BROWSER_CONTEXT = frozenset({"origin", "referer", "forwarded", "x-real-ip", "via"})
STRIPPED_PREFIXES = ("sec-fetch-", "x-forwarded-", "sec-ch-")
ALWAYS_STRIPPED = CLIENT_ACCOUNT_HEADERS | HOP_BY_HOP | BROWSER_CONTEXT


def upstream_headers(
    fields: Iterable[tuple[bytes, bytes]],
    provider: Provider,
    key_header: str,
    key_value: str,
    *,
    credentials: frozenset[str] = CLIENT_CREDENTIAL_HEADERS,
    websocket: bool = False,
) -> HeaderFields:
    """The header fields to send upstream, the injected key exactly once. `credentials`: every
    header a client's credential may be in (Rules.credential_headers: the providers' key
    headers and keyrelay's own auth headers); this is the one place they are dropped."""
    policy = provider.headers
    drop = ALWAYS_STRIPPED | credentials | policy.strip | {key_header, "accept-encoding"}
    if provider.target_header:
        drop = drop | {provider.target_header}
    if websocket:
        # The upgrade handshake itself is end to end for a WebSocket.
        drop = drop - {"connection", "upgrade"}
    out: list[tuple[bytes, bytes]] = []
    present: set[str] = set()
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1").lower()
        if websocket and name == WEBSOCKET_PROTOCOLS:
            # A credential header, but for its credential entries only: the rest of a
            # WebSocket's offer goes on (OpenAI's `realtime`).
            kept = upstream_protocols(raw_value.decode("latin-1"))
            if kept is None:
                continue
            raw_value = kept.encode("latin-1")
        elif name in drop or name.startswith(STRIPPED_PREFIXES):
            continue
        if name not in FRAMING and not policy.forwards(name):
            continue
        out.append((raw_name, raw_value))
        present.add(name)
    for name, value in policy.default:
        if name.lower() not in present:
            out.append((name.encode(), value.encode()))
    set_names = {name.lower() for name, _ in policy.set}
    out = [f for f in out if f[0].decode("latin-1").lower() not in set_names]
    out.extend((name.encode(), value.encode()) for name, value in policy.set)
    # Compressed responses cannot be relayed chunk by chunk as plain bytes: ask for identity.
    out.append((b"accept-encoding", b"identity"))
    out.append((key_header.encode(), key_value.encode()))
    return tuple(out)


def upstream_target(path: str) -> str:
    """The path and query to send upstream: without the query parameters a client's credential
    may be in (`?key=`: the client never chooses the key); everything else as sent."""
    target, question, query = path.partition("?")
    if not question or not any(is_credential_param(p) for p in query.split("&")):
        return path
    kept = "&".join(p for p in query.split("&") if not is_credential_param(p))
    return f"{target}?{kept}" if kept else target
