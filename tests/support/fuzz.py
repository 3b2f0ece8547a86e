"""Request heads that browsers and attackers send, generated from a seed: the header fuzz.

Every parser keyrelay runs on a request head (Origin, Host, Authorization, cookies, the target
headers, Content-Length, Accept-Encoding, Sec-Fetch-*, the CORS request headers, JWTs) gets
names and values from here: unicode, control characters, huge values, brackets, percent
escapes, repeated headers. The same seed always gives the same heads, so a failure replays.

`heads(seed, count)` yields (method, path, headers); the values are text that an HTTP/1 head
can carry (no CR, LF or NUL, which no server accepts in a well-framed request).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from .guard import AUDIENCE, HS_SECRET, ISSUER, rules, token_entry

Head = tuple[str, str, list[tuple[str, str]]]

METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD")
PATHS = (
    "/api/anthropic/v1/messages",
    "/api/openai/chat/completions",
    "/api/openai/realtime?model=gpt-4o",
    "/api/elevenlabs/v1/text-to-speech/x",
    "/api/fal/proxy",
    "/api/falai",
    "/api/inference/proxy",
    "/api/inference/proxy?__inf_target=https://api.inference.sh/apps",
    "/api/inference/proxy?__inf_target=%5B",
    "/_keyrelay/health",
    "/_keyrelay/metrics",
    "/_keyrelay/",
    "/",
    "/api/anthropic/../openai/x",
    "/api/%2e%2e/x",
    "/api/anthropic/%ZZ",
    "/api/openai/\u00e9",
)
NAMES = (
    "origin",
    "host",
    "authorization",
    "cookie",
    "x-fal-target-url",
    "x-inf-target-url",
    "content-length",
    "transfer-encoding",
    "accept-encoding",
    "content-encoding",
    "content-type",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "access-control-request-method",
    "access-control-request-headers",
    "access-control-request-private-network",
    "x-api-key",
    "xi-api-key",
    "expect",
    "upgrade",
    "connection",
    "te",
    "range",
    "forwarded",
    "x-forwarded-for",
    "anthropic-version",
    "openai-organization",
    "idempotency-key",
    "accept",
    "user-agent",
    "referer",
    "x-fal-queue-priority",
    "x-request-id",
)
ATOMS = (
    "",
    " ",
    "null",
    "*",
    "[",
    "]",
    "[]",
    "http://[",
    "https://]#",
    "http://%]",
    "http://[::1",
    "http://[::1]:99999",
    "http://localhost:3000",
    "https://app.example.com",
    "https://a.example.com:-1",
    "http://user@host",
    "http://h:0",
    "file://",
    "data:,",
    "//evil.example",
    "https://fal.run/x",
    "https://queue.fal.run/a/b?c=%zz",
    "https://api.inference.sh/%",
    "https://[fal.run]/",
    "https://fal.run:443@evil.example/",
    "https://fal.run\u3002evil/",
    "%",
    "%00",
    "%ZZ",
    "%2e%2e/",
    "\\..\\",
    "Bearer",
    "Bearer ",
    "Bearer a.b.c",
    "Bearer eyJ.eyJ.",
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "Basic Og==",
    "Basic %%%",
    "Key a:b",
    "keyrelay_session=",
    "a=b; a=c; ; =;",
    "-1",
    "0",
    "1e3",
    "18446744073709551616",
    "0x10",
    " 5",
    "chunked",
    "chunked, gzip",
    "gzip;q=x",
    "br;q=1.5, *;q=-1",
    "identity;q=0",
    "cross-site",
    "same-origin",
    "none",
    "websocket",
    "Upgrade, close",
    "100-continue",
    "bytes=0-",
    "\u00e9\u00e8",
    "\u2028",
    "\ud7ff\ue000",
    "\U0001f600",
    "\t",
    "\x01\x7f\x1b[31m",
    "\x0b\x0c",
    "\"';<script>",
    "a,b,,c",
)


# Rules that switch on each header parser: CORS origins, tokens in a header or a cookie, JWTs,
# body rules, a rate.
CORS = {"origins": ["http://localhost:3000", "https://*.example.com", "http://[::1]:8080"]}
RULES = {
    "open": rules(defaults={"cors": CORS}, inference={}),
    "tokens": rules(
        defaults={"cors": CORS, "auth": {"mode": "tokens", "tokens": {"env": "T"}, "cookie": "kr"}},
        openai={"validation": {"models": ["gpt-4o*"]}, "limits": {"rate": "100/second"}},
    ),
    "jwt": rules(
        defaults={
            "cors": {**CORS, "credentials": True},
            "auth": {
                "mode": "jwt",
                "cookie": "keyrelay_session",
                "jwt": {
                    "algorithms": ["HS256"],
                    "secret": {"env": "S"},
                    "audience": AUDIENCE,
                    "issuer": ISSUER,
                },
            },
        },
        inference={},
    ),
}
ENV = {"T": token_entry("alice", "tok"), "S": HS_SECRET, "OPENAI_API_KEY": "k", "FAL_KEY": "f"}


def value(rng: random.Random) -> str:
    """One header value: an atom, a few joined, or a huge one."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(ATOMS)
    if roll < 0.9:
        return rng.choice(("", ",", " ", ";", ":")).join(
            rng.choice(ATOMS) for _ in range(rng.randint(2, 4))
        )
    return rng.choice(ATOMS) * rng.randint(100, 2000)  # huge (bounded below the head cap)


def name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.85:
        known = rng.choice(NAMES)
        return known.upper() if rng.random() < 0.1 else known
    return rng.choice(("x-\u00e9", "x-" + "a" * 300, "x-[]", "x-%41", "x-a.b", "x-"))


def heads(seed: int, count: int) -> Iterator[Head]:
    rng = random.Random(seed)
    for _ in range(count):
        headers = [(name(rng), value(rng)) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.3:  # the same header repeated, differently
            repeated = rng.choice(NAMES)
            headers += [(repeated, value(rng)) for _ in range(rng.randint(2, 4))]
        yield rng.choice(METHODS), rng.choice(PATHS), headers


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Headers that frame the message or the connection: the wire fuzz frames its requests itself,
# because a request that lies about its own length is not a well-framed one.
FRAMING = frozenset({"content-length", "transfer-encoding"})
# Connection-specific headers are malformed in HTTP/2 (RFC 9113 8.2.2): a stream reset is right.
H2_FORBIDDEN = FRAMING | {"connection", "upgrade", "te", "keep-alive", "proxy-connection", "host"}


def http1_request(head: Head, host: str) -> bytes:
    """The head on the wire as HTTP/1.1 (UTF-8), with a Host unless the fuzz chose one, and a
    body with its Content-Length for methods that carry one."""
    method, path, headers = head
    body = b'{"model": "gpt-4o-mini"}' if method in ("POST", "PUT", "PATCH") else b""
    fields = [(k, v) for k, v in headers if k.lower() not in FRAMING]
    if not any(k.lower() == "host" for k, _ in fields):
        fields.insert(0, ("host", host))
    fields.append(("content-length", str(len(body))))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields)]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


def http2_fields(head: Head) -> list[tuple[str, str]]:
    """The head's fields as a well-formed HTTP/2 request has them: lower-case token names, no
    connection-specific fields, values without surrounding whitespace. (mitmproxy answers a
    malformed one with 400, and to a HEAD with a body too: the client then drops the
    connection.)"""
    _method, _path, headers = head
    return [
        (k.lower(), v.strip(" \t"))
        for k, v in headers
        if _TOKEN.fullmatch(k) and k.lower() not in H2_FORBIDDEN
    ]
