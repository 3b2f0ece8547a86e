"""Rules files and credentials for the auth, limits and validation tests."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import jwt
import yaml

AUDIENCE = "keyrelay-test"
ISSUER = "https://auth.test.invalid/"
HS_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


def rules(
    *,
    defaults: dict[str, Any] | None = None,
    openai: dict[str, Any] | None = None,
    fal: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
) -> str:
    """A rules file with the openai (prefix) and fal (target header) providers, and the
    inference provider (target header or `__inf_target` query) when `inference` is given."""
    providers = {
        "openai": {
            "match": {"prefix": "/api/openai"},
            "upstream": "https://api.openai.com/v1",
            "allow": ["* api.openai.com/**"],  # these tests are about the guard, not reach
            "credential": {
                "header": "authorization",
                "format": "Bearer {key}",
                "key": {"env": "OPENAI_API_KEY"},
            },
            **(openai or {}),
        },
        "fal": {
            "match": {"header": "x-fal-target-url", "paths": ["/api/fal/proxy"]},
            "methods": ["GET", "POST", "PUT", "DELETE"],
            "credential": {
                "header": "authorization",
                "format": "Key {key}",
                "key": {"env": "FAL_KEY"},
            },
            **(fal or {}),
        },
    }
    if inference is not None:
        providers["inference"] = {
            "match": {
                "header": "x-inf-target-url",
                "query": "__inf_target",
                "paths": ["/api/inference/proxy"],
            },
            "credential": {
                "header": "authorization",
                "format": "Bearer {key}",
                "key": {"env": "INFERENCE_API_KEY"},
            },
            **inference,
        }
    doc: dict[str, Any] = {**(top or {}), "providers": providers}
    if defaults:
        doc["defaults"] = defaults
    return yaml.safe_dump(doc, sort_keys=False)


def token_entry(name: str, token: str) -> str:
    return f"{name}:{hashlib.sha256(token.encode()).hexdigest()}"


def hs_token(sub: str = "alice", *, secret: str = HS_SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def tampered(token: str) -> str:
    """The same token with its payload changed (sub: mallory) and the old signature kept."""
    header, _, signature = token.split(".")
    claims = {"sub": "mallory", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300}
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{payload}.{signature}"


def multipart_body(*parts: str, boundary: str = "XyZ") -> bytes:
    """A multipart/form-data body of these parts (each its headers, a blank line, its value)."""
    return ("".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n").encode(
        "latin-1"
    )
