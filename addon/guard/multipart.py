"""A strict multipart/form-data reader for the body rules: the (name, value) of every part, or
the reason the body is refused.

Servers read multipart leniently and each in its own way (mitmproxy's `decode_multipart` reads
only a part's first header line; others split at a bare LF, decode RFC 2231 names or
backslash escapes). A body rule is only as good as the agreement between its reader and the
provider's, so this reader accepts only the plain form every HTTP client sends, where all of
those readers agree, and refuses the rest: CRLF line ends, one `Content-Disposition: form-data;
name="..."` per part, no header given twice, no folded or odd header lines, no transfer
encoding, and the boundary nowhere but on its delimiter lines.
"""

from __future__ import annotations

import re

from addon.problems import Refusal

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf';[ \t]*({_TOKEN})[ \t]*=[ \t]*("[^"\\\r\n]*"|{_TOKEN})[ \t]*')
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*)")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PLAIN_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
# Real forms have a few parts (16 images at most for OpenAI's edits); reading each costs
# Python time on the event loop (4 MiB of one-byte parts: about 0.4 s).
MAX_PARTS = 1000


def _refusal(why: str) -> Refusal:
    return Refusal(400, "multipart-unreadable", f"the multipart body cannot be checked: {why}")


def parameters(value: str) -> tuple[str, dict[str, str]] | None:
    """`type; key=value; ...` -> (lower-case type, {lower-case key: value}); None when any
    part of it could be read two ways: a key given twice, RFC 2231 `key*` / `key*0` (but
    `filename*`), a backslash escape (readers disagree on all three), or anything that is not
    a plain parameter."""
    kind, _, rest = value.partition(";")
    rest = ";" + rest if rest else ""
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            return None
        key, raw = match[1].lower(), match[2]
        if key in params or ("*" in key and not key.startswith("filename*")):
            return None
        params[key] = raw[1:-1] if raw.startswith('"') else raw
        position = match.end()
    return kind.strip().lower(), params


def form_fields(content_type: str, body: bytes) -> list[tuple[str, bytes]] | Refusal:
    """The fields of a multipart/form-data body, in order."""
    parsed = parameters(content_type)
    boundary = parsed[1].get("boundary") if parsed else None
    if boundary is None or not _BOUNDARY.fullmatch(boundary):
        return _refusal("the Content-Type has no usable boundary")
    delimiter = b"--" + boundary.encode()
    if body.count(delimiter) > MAX_PARTS + 1:
        return _refusal(f"it has more than {MAX_PARTS} parts")
    if not body.startswith(delimiter + b"\r\n"):
        return _refusal("it must start with its boundary")
    end = body.find(b"\r\n" + delimiter + b"--")
    if end < 0:
        return _refusal("the closing boundary is missing")
    chunks = body[len(delimiter) + 2 : end].split(b"\r\n" + delimiter + b"\r\n")
    # The boundary anywhere else (in a part, after a bare LF, with padding) is a place where
    # another reader may see a part this one does not.
    if body.count(delimiter) != len(chunks) + 1:
        return _refusal("its boundary appears inside a part")
    fields = []
    for chunk in chunks:
        field = _part(chunk)
        if isinstance(field, Refusal):
            return field
        fields.append(field)
    return fields


def _part(chunk: bytes) -> tuple[str, bytes] | Refusal:
    head, separator, value = chunk.partition(b"\r\n\r\n")
    if not separator:
        return _refusal("a part has no blank line after its headers")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        match = _HEADER.fullmatch(line)
        if match is None:  # also a lone CR or LF, or a folded line
            return _refusal("a part has a malformed header line")
        name = match[1].decode().lower()
        if name in headers:
            return _refusal(f"a part has two {name} headers")
        headers[name] = match[2].decode("latin-1").rstrip(" \t")
    encoding = headers.get("content-transfer-encoding")
    if encoding is not None and encoding.lower() not in _PLAIN_ENCODINGS:
        return _refusal("a part has a content-transfer-encoding")
    disposition = parameters(headers.get("content-disposition", ""))
    if disposition is None or disposition[0] != "form-data" or "name" not in disposition[1]:
        return _refusal('every part needs one Content-Disposition: form-data; name="..."')
    return disposition[1]["name"], value
