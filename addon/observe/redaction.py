"""Mask secrets in everything a flow keeps: the injected keys, keys an upstream echoes back, and
the client's own credential for keyrelay.

Save (`-w`), HAR export and mitmweb read the flow after the script's `response` / `error` /
`done` hooks, so scrubbing there keeps secrets out of everything stored or shown afterwards.
Redaction works on values, not header names: a key is masked wherever it turns up.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus

from mitmproxy import http

from addon import header_index
from addon.config.credential import (
    CLIENT_CREDENTIAL_HEADERS,
    WEBSOCKET_PROTOCOLS,
    is_credential_param,
    protocol_credential,
    protocols,
)

Secrets = Mapping[str, str]  # secret value -> placeholder, e.g. "sk-..." -> "<OPENAI_API_KEY>"

# Shorter values would mask ordinary text ("Bearer", "null"); credentials are never this short.
MIN_SECRET_LENGTH = 6
# What a client sends is searched for in the whole flow; bound the work a client can cause.
MAX_CLIENT_SECRETS = 8
MAX_CLIENT_SECRET_LENGTH = 8192
_AUTH_SCHEMES = ("bearer ", "basic ", "key ", "token ")


class Masks:
    """Secrets made ready once for the many fields of a flow: long enough to be secrets, longest
    first (fal's "id:secret" contains "id": the whole goes first, no fragment is left behind),
    as text and as the bytes headers and bodies hold."""

    __slots__ = ("raw", "text")

    def __init__(self, secrets: Secrets) -> None:
        self.text = tuple(
            sorted(
                ((v, p) for v, p in secrets.items() if len(v) >= MIN_SECRET_LENGTH),
                key=lambda item: -len(item[0]),
            )
        )
        self.raw = tuple((v.encode("utf-8", "surrogateescape"), p.encode()) for v, p in self.text)

    def __bool__(self) -> bool:
        return bool(self.text)


Masking = Secrets | Masks  # every function here takes either; prepare once, pass Masks around


def masks(secrets: Masking) -> Masks:
    return secrets if isinstance(secrets, Masks) else Masks(secrets)


def scrub_text(text: str, secrets: Masking) -> str:
    for value, placeholder in masks(secrets).text:
        if value in text:
            text = text.replace(value, placeholder)
    return text


def scrub_bytes(data: bytes, secrets: Masking) -> bytes:
    for value, placeholder in masks(secrets).raw:
        if value in data:
            data = data.replace(value, placeholder)
    return data


def client_credentials(
    headers: http.Headers, names: Iterable[str] = CLIENT_CREDENTIAL_HEADERS
) -> dict[str, str]:
    """The credential values a client sent, each mapped to a placeholder naming only a hash.

    Called before the core strips them; the result lives in memory, never in flow metadata.
    The value after an auth scheme ("Bearer x") and each cookie value count as secrets too.
    """
    wanted = _wanted(names)
    found: dict[str, str] = {}
    for raw_name, raw_value in headers.fields:  # one pass, not one lookup per name
        name = wanted.get(raw_name.lower())
        if name is None or len(raw_value) > MAX_CLIENT_SECRET_LENGTH:
            continue  # an oversized value is masked by its header's name instead
        value = raw_value.decode("utf-8", "surrogateescape")  # as Headers.get_all gives it
        placeholder = f"<client {name} {fingerprint(value)}>"
        for part in _credential_parts(name, value):
            if len(found) == MAX_CLIENT_SECRETS:
                return found
            found[part] = placeholder
    return found


def query_credentials(path: str) -> dict[str, str]:
    """The credentials a client put in its query (`?key=`), as sent and unescaped (a HAR export
    shows them decoded), each mapped to a placeholder naming only a hash. Routing drops them
    upstream; this keeps them out of what a refused or failed flow keeps of its URL."""
    query = path.partition("?")[2]
    found: dict[str, str] = {}
    for param in query.split("&") if query else ():
        if not is_credential_param(param):
            continue
        name, _, raw = param.partition("=")
        if len(raw) > MAX_CLIENT_SECRET_LENGTH:
            continue
        # No whitespace: it stands in a URL, which must stay one token.
        placeholder = f"<client-{unquote_plus(name).strip().lower()}-{fingerprint(raw)}>"
        for value in {raw, unquote(raw), unquote_plus(raw)}:
            if len(found) == MAX_CLIENT_SECRETS:
                return found
            if len(value) >= MIN_SECRET_LENGTH:
                found[value] = placeholder
    return found


def scrub_oversized_credentials(
    headers: http.Headers, names: Iterable[str] = CLIENT_CREDENTIAL_HEADERS
) -> None:
    """Credential headers too long to be searched for as values are masked by their name."""
    wanted = _wanted(names)
    oversized = {  # one pass over the fields (the common case: none), not a lookup per name
        name
        for raw_name, raw_value in headers.fields
        if len(raw_value) > MAX_CLIENT_SECRET_LENGTH and (name := wanted.get(raw_name.lower()))
    }
    for name in oversized:
        headers[name] = f"<client {name} (too long to keep)>"


def _raw_names(names: Iterable[str]) -> dict[bytes, str]:
    """Lower-case header names as mitmproxy's fields hold them (bytes) -> as text."""
    return {name.lower().encode("utf-8", "surrogateescape"): name.lower() for name in names}


@functools.lru_cache(maxsize=16)
def _names_of(names: frozenset[str]) -> dict[bytes, str]:
    """A rules load's set, made once (every request asks for it)."""
    return _raw_names(names)


def _wanted(names: Iterable[str]) -> dict[bytes, str]:
    return _names_of(names) if isinstance(names, frozenset) else _raw_names(names)


def _credential_parts(name: str, value: str) -> list[str]:
    parts = [value.strip()]
    lower = value.lower()
    for scheme in _AUTH_SCHEMES:
        if lower.startswith(scheme):
            parts.append(value[len(scheme) :].strip())
    if name.lower() == "cookie":
        parts += [c.partition("=")[2].strip() for c in value.split(";")]
    if name.lower() == WEBSOCKET_PROTOCOLS:
        parts += [t for p in protocols(value) if (t := protocol_credential(p))]
    return [p for p in parts if len(p) >= MIN_SECRET_LENGTH]


def fingerprint(value: str) -> str:
    """A short, stable, non-reversible name for a credential: enough to tell two clients apart."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def scrub_headers(headers: http.Headers, secrets: Masking) -> None:
    secrets = masks(secrets)
    fields = headers.fields
    # One search per secret over all values first: most heads hold none, and then no field
    # is scrubbed one by one (a match across the joint would not be masked field by field
    # either, so the joint hides nothing).
    values = b"\n".join(value for _, value in fields)
    if not any(raw in values for raw, _ in secrets.raw):
        return
    scrubbed = tuple((name, scrub_bytes(value, secrets)) for name, value in fields)
    if scrubbed != fields:
        headers.fields = scrubbed


def scrub_message(message: http.Message, secrets: Masking) -> None:
    """Headers, trailers and body (decoded when it can be; the raw bytes otherwise)."""
    secrets = masks(secrets)
    scrub_headers(message.headers, secrets)
    if message.trailers:
        scrub_headers(message.trailers, secrets)
    raw = message.raw_content
    if not raw:
        return
    content = header_index.content(message)
    if content is not None and content is not raw:
        cleaned = scrub_bytes(content, secrets)
        if cleaned != content:
            message.content = cleaned
            return
    cleaned = scrub_bytes(raw, secrets)
    if cleaned != raw:
        message.raw_content = cleaned
        # A buffered response still goes to the client after this: keep its framing true.
        if "content-length" in message.headers and "transfer-encoding" not in message.headers:
            message.headers["content-length"] = str(len(cleaned))


def scrub_flow(
    flow: http.HTTPFlow, secrets: Masking, request_secrets: Masking | None = None
) -> None:
    """Mask every secret in a flow: request (URL, headers, body), response, error, WebSocket.

    `request_secrets` (default: `secrets`) may add the client's own credentials: they are
    masked on the request side only, as a buffered response still goes to that client, and
    what it sent must not reshape what it gets."""
    secrets = masks(secrets)
    scrub_request(flow.request, secrets if request_secrets is None else masks(request_secrets))
    if not secrets:
        return
    if flow.response is not None:
        scrub_message(flow.response, secrets)
    if flow.error is not None:
        flow.error.msg = scrub_text(flow.error.msg, secrets)
    if flow.websocket is not None:
        for ws_message in flow.websocket.messages:
            ws_message.content = scrub_bytes(ws_message.content, secrets)


def scrub_request(request: http.Request, secrets: Masks) -> None:
    if not secrets:
        return
    path = scrub_text(request.path, secrets)
    if path != request.path:
        request.path = path
    scrub_message(request, secrets)


class StreamScrubber:
    """Masks secrets in a body relayed chunk by chunk, for the client as it streams.

    The head (and any content-length) is already on its way, so a key becomes a placeholder of
    exactly its own length. A key split across two chunks must still be caught, so a chunk's
    tail that could be the start of a secret is held back until the next chunk shows whether
    it is one. Only such a tail waits: ordinary SSE events pass at once, their timing intact.
    """

    def __init__(self, secrets: Masking) -> None:
        self._pairs = [
            (raw, _same_length(placeholder, len(raw))) for raw, placeholder in masks(secrets).raw
        ]
        self._window = max((len(value) for value, _ in self._pairs), default=1) - 1
        self._held = b""

    def __call__(self, chunk: bytes, *, end: bool = False) -> bytes:
        data = self._held + chunk
        for value, placeholder in self._pairs:
            if value in data:
                data = data.replace(value, placeholder)
        if end:  # nothing more can complete a secret
            self._held = b""
            return data
        cut = self._cut(data)
        self._held = data[cut:]
        return data[:cut]

    def _cut(self, data: bytes) -> int:
        """Where a possible beginning of a secret starts in the tail, else the end."""
        start = max(0, len(data) - self._window)
        cut = len(data)
        for value, _ in self._pairs:
            i = data.find(value[:1], start)
            while i != -1 and i < cut:
                if value.startswith(data[i:]):
                    cut = i
                    break
                i = data.find(value[:1], i + 1)
        return cut


def _same_length(placeholder: bytes, length: int) -> bytes:
    """`<OPENAI_API_KEY>****` cut or padded to `length` bytes."""
    return (placeholder + b"*" * length)[:length]
