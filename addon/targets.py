"""Target URLs for header-routed providers: parse once, strictly, then match an allowlist.

The parsed Target is exactly what is sent upstream, so the check and the request cannot
disagree about the host (the classic SSRF gap: one parser reads `https://fal.run@evil.com`
differently from another). Anything ambiguous is refused rather than interpreted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

_PCHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QCHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)")
# Encoded "/", "\" and NUL change what a path means to the next server: never pass them on.
_FORBIDDEN_ESCAPES = ("%2F", "%5C", "%00")


class TargetError(ValueError):
    """The target URL is unusable; the message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    path: str
    query: str = ""

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def url(self) -> str:
        return f"https://{self.host}{self.path_and_query}"


def parse_target(raw: str) -> Target:
    """Parse an absolute https URL into its normalised host, path and query."""
    # Whitespace, "\" and "#" are read differently by different URL parsers.
    if any(c <= " " or c in "\\#\x7f" for c in raw):
        raise TargetError("the target URL contains whitespace, '\\' or '#'")
    if raw[:8].lower() != "https://":
        raise TargetError("only https:// targets are allowed")
    rest = raw[8:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:cut], rest[cut:]
    path, _, query = rest.partition("?")
    return Target(normalise_host(authority), normalise_path(path or "/"), _check_query(query))


def normalise_host(authority: str) -> str:
    """Lower-case, IDNA-encoded host name; refuses userinfo, ports, IP literals."""
    if "@" in authority:
        raise TargetError("the target URL must not contain user information")
    if authority.startswith("["):
        raise TargetError("IP address targets are not allowed")
    host, colon, port = authority.partition(":")
    if colon and port != "443":
        raise TargetError("only the default https port is allowed")
    if "%" in host:
        raise TargetError("the target host must not be percent-encoded")
    if host.endswith("."):
        host = host[:-1]
    try:
        host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as e:
        raise TargetError("the target host is not a valid host name") from e
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetError("the target host is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise TargetError("IP address targets are not allowed")
    return host


def path_under(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it, at a segment boundary."""
    return path == prefix or path.startswith(prefix + "/")


def normalise_path(path: str) -> str:
    """RFC 3986 normalisation: decode unreserved escapes, resolve dot segments."""
    if not path.startswith("/") or not _PCHAR.fullmatch(path) or _ESCAPE.search(path):
        raise TargetError("the target path is malformed")
    upper = path.upper()
    if any(escape in upper for escape in _FORBIDDEN_ESCAPES):
        raise TargetError("the target path contains an encoded '/', '\\' or NUL")
    segments: list[str] = []
    parts = [_decode_unreserved(part) for part in path.split("/")[1:]]
    for i, segment in enumerate(parts):
        last = i == len(parts) - 1
        if segment == ".":
            if last:
                segments.append("")
        elif segment == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


def _decode_unreserved(segment: str) -> str:
    if "%" not in segment:
        return segment
    out, i = [], 0
    while i < len(segment):
        if segment[i] == "%":
            char = chr(int(segment[i + 1 : i + 3], 16))
            out.append(char if char in _UNRESERVED else "%" + segment[i + 1 : i + 3].upper())
            i += 3
        else:
            out.append(segment[i])
            i += 1
    return "".join(out)


def _check_query(query: str) -> str:
    if not _QCHAR.fullmatch(query) or _ESCAPE.search(query):
        raise TargetError("the target query is malformed")
    return query


class PatternError(ValueError):
    """An allow pattern that is malformed or can never match."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """`host/path[?query]` with glob `*` (one host label or path segment) and `**` (anything)."""

    text: str
    regex: re.Pattern[str]
    matches_query: bool
    host_regex: re.Pattern[str]

    def host_matches(self, host: str) -> bool:
        return self.host_regex.fullmatch(host) is not None

    def matches(self, target: Target) -> bool:
        subject = f"{target.host}{target.path}"
        if self.matches_query:
            subject += f"?{target.query}"
        return self.regex.fullmatch(subject) is not None


def compile_pattern(text: str) -> Pattern:
    raw = text
    if raw.lower().startswith("https://"):
        raw = raw[8:]
    elif "://" in raw:
        raise PatternError("only https targets are allowed, so a non-https pattern cannot match")
    if "#" in raw or "@" in raw or "\\" in raw:
        raise PatternError("a pattern cannot contain '#', '@' or '\\' (such targets are refused)")
    host, slash, rest = raw.partition("/")
    if not slash:
        raise PatternError(f"a pattern needs a path, e.g. '{raw}/**'")
    if ":" in host:
        raise PatternError(
            "only the default port is allowed, so a pattern with a port cannot match"
        )
    host = host.lower().rstrip(".")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(x) or x == "*" for x in labels):
        raise PatternError(f"'{host}' is not a host name pattern")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise PatternError("IP address targets are refused, so this pattern cannot match")
    path, question, query = ("/" + rest).partition("?")
    if any(seg in (".", "..") for seg in path.split("/")) or "%2f" in path.lower():
        raise PatternError(
            "targets are normalised, so a path with dot segments or %2F cannot match"
        )
    host_re = r"\.".join("[a-z0-9-]+" if x == "*" else re.escape(x) for x in labels)
    regex = host_re + _glob(path, single="[^/]*")
    if question:
        regex += r"\?" + _glob(query, single="[^&]*")
    return Pattern(text, re.compile(regex), bool(question), re.compile(host_re))


def _glob(text: str, single: str) -> str:
    return ".*".join(
        single.join(re.escape(piece) for piece in part.split("*")) for part in text.split("**")
    )
