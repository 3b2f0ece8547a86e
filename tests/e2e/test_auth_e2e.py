"""Client authentication through the real mitmdump: tokens, JWT (HS256 secret, ES256 JWKS URL),
forward auth against a small local app, cookies for browser clients."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from support.guard import AUDIENCE, HS_SECRET, ISSUER, hs_token, rules, tampered, token_entry

CHAT = "/api/openai/chat/completions"


class App:
    """A local app (plain HTTP on 127.0.0.1): forward-auth endpoint and a JWKS document."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.jwks: dict[str, object] = {"keys": []}
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    self._send(200, json.dumps(app.jwks).encode())
                    return
                app.calls.append({k.lower(): v for k, v in self.headers.items()})
                cookie = self.headers.get("cookie", "")
                bearer = self.headers.get("authorization", "")
                if "session=good" in cookie or bearer == "Bearer app-token":
                    self._send(200, b"", [("x-user", "alice")])
                elif "session=banned" in cookie:
                    self._send(403, b"")
                else:
                    self._send(401, b"")

            def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app() -> Iterator[App]:
    a = App()
    yield a
    a.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def post(make_client, proxy, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return make_client(proxy.port).post(CHAT, json={"model": "m"}, headers=headers)


# -- tokens ---------------------------------------------------------------------------------------


def test_tokens_valid_wrong_missing_and_custom_header_never_forwarded(
    keyrelay_factory, make_client, upstream
) -> None:
    entries = ",".join([token_entry("ci-bot", "tok-one"), token_entry("alice", "tok-two")])
    proxy = keyrelay_factory(
        rules(
            defaults={
                "auth": {
                    "mode": "tokens",
                    "tokens": {"env": "KR_TOKENS"},
                    "header": "x-keyrelay-token",
                }
            }
        ),
        env={"KR_TOKENS": entries},
    )
    ok = post(make_client, proxy, {"x-keyrelay-token": "tok-two"})
    assert ok.status == 200, ok.body
    sent = upstream.only_request()
    assert sent.header("x-keyrelay-token") is None  # keyrelay's own credential stays here
    assert sent.header("authorization") == "Bearer test-openai-key-b82d03c5"
    proxy.wait_for_output(r"token:alice openai POST")

    for headers in ({"x-keyrelay-token": "tok-three"}, {}, bearer("tok-two")):
        refused = post(make_client, proxy, headers)
        assert refused.status == 401, headers
        assert refused.json()["type"].endswith("/unauthenticated")
        assert refused.header("www-authenticate") == 'Bearer realm="keyrelay"'
    assert len(upstream.requests) == 1


def test_tokens_from_a_file_with_allow_list_gives_403(
    keyrelay_factory, make_client, tmp_path
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# team\n{token_entry('alice', 'a-tok')}\n{token_entry('bob', 'b-tok')}\n")
    proxy = keyrelay_factory(
        rules(
            openai={"auth": {"mode": "tokens", "tokens": {"file": str(tokens)}, "allow": ["alice"]}}
        )
    )
    assert post(make_client, proxy, bearer("a-tok")).status == 200
    forbidden = post(make_client, proxy, bearer("b-tok"))
    assert forbidden.status == 403
    assert forbidden.json()["type"].endswith("/forbidden")


# -- JWT -----------------------------------------------------------------------------------------

HS_RULES = {
    "auth": {
        "mode": "jwt",
        "cookie": "kr_session",
        "jwt": {
            "algorithms": ["HS256"],
            "secret": {"env": "KR_JWT_SECRET"},
            "audience": AUDIENCE,
            "issuer": ISSUER,
            "leeway": 0,
        },
    }
}


@pytest.fixture
def hs_proxy(keyrelay_factory):  # type: ignore[no-untyped-def]
    return keyrelay_factory(rules(defaults=HS_RULES), env={"KR_JWT_SECRET": HS_SECRET})


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (hs_token(exp=int(time.time()) - 60), "expired"),
        (hs_token(aud="someone-else"), "audience"),
        (hs_token(iss="https://evil.invalid/"), "issuer"),
        (tampered(hs_token()), "invalid"),
        (hs_token(secret="another-secret-of-sufficient-length-0123456789"), "invalid"),
        (jwt.encode({"sub": "x", "aud": AUDIENCE, "iss": ISSUER}, HS_SECRET), "invalid"),  # no exp
        ("not-a-jwt", "not a JWT"),
    ],
)
def test_jwt_hs256_refusals(hs_proxy, make_client, upstream, token: str, detail: str) -> None:
    refused = post(make_client, hs_proxy, bearer(token))
    assert refused.status == 401
    assert detail in refused.json()["detail"]
    assert upstream.requests == []


def test_jwt_hs256_valid_missing_and_cookie(hs_proxy, make_client, upstream) -> None:
    assert post(make_client, hs_proxy, bearer(hs_token("carol"))).status == 200
    hs_proxy.wait_for_output(r"jwt:carol openai POST")
    assert post(make_client, hs_proxy, {}).status == 401
    # A browser client (fal, inference.sh with credentials: 'include') sends a cookie instead.
    by_cookie = post(
        make_client, hs_proxy, {"cookie": f"theme=dark; kr_session={hs_token('dave')}"}
    )
    assert by_cookie.status == 200
    assert post(make_client, hs_proxy, {"cookie": "kr_session=garbage"}).status == 401
    assert [r.header("cookie") for r in upstream.requests] == [None, None]


def test_preflight_is_never_401(hs_proxy, make_client) -> None:
    reply = make_client(hs_proxy.port).request(
        "OPTIONS",
        CHAT,
        headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
    )
    assert reply.status != 401


def test_jwt_es256_from_a_jwks_url(keyrelay_factory, make_client, app) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    app.jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}
    proxy = keyrelay_factory(
        rules(
            defaults={
                "auth": {
                    "mode": "jwt",
                    "jwt": {
                        "algorithms": ["ES256"],
                        "jwks": f"{app.url}/jwks.json",
                        "audience": AUDIENCE,
                        "issuer": ISSUER,
                    },
                }
            }
        )
    )
    claims = {"sub": "erin", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 60}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    assert post(make_client, proxy, bearer(good)).status == 200
    proxy.wait_for_output(r"jwt:erin openai POST")
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k1"})
    assert post(make_client, proxy, bearer(forged)).status == 401
    unknown = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k2"})
    assert "signing key" in post(make_client, proxy, bearer(unknown)).json()["detail"]
    # An HS256 token signed with the public key as its secret: algorithm confusion is refused.
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = jwt.utils.base64url_encode(b'{"alg":"HS256","kid":"k1","typ":"JWT"}')
    body = jwt.utils.base64url_encode(json.dumps(claims).encode())
    mac = jwt.utils.base64url_encode(hmac.digest(pem, head + b"." + body, "sha256"))
    confused = b".".join((head, body, mac)).decode()
    assert post(make_client, proxy, bearer(confused)).status == 401


# -- forward auth ------------------------------------------------------------------------------


def test_forward_auth_against_the_app(keyrelay_factory, make_client, upstream, app) -> None:
    proxy = keyrelay_factory(
        rules(
            defaults={
                "auth": {
                    "mode": "forward",
                    "forward": {"url": f"{app.url}/auth", "identity_header": "x-user", "cache": 60},
                }
            }
        )
    )
    ok = post(make_client, proxy, {"cookie": "session=good; other=1"})
    assert ok.status == 200, ok.body
    proxy.wait_for_output(r"forward:alice openai POST")
    call = app.calls[0]
    assert call["cookie"] == "session=good; other=1"
    assert call["x-original-uri"] == CHAT and call["x-original-method"] == "POST"
    assert upstream.only_request().header("cookie") is None

    # Cached: the same cookies again do not ask the app again.
    assert post(make_client, proxy, {"cookie": "session=good; other=1"}).status == 200
    assert len(app.calls) == 1
    # Per credentials, not per URI: a fresh query string per request never misses the cache.
    c = make_client(proxy.port)
    for uri in ("/api/openai/models", "/api/openai/models?junk=1", "/api/openai/models?junk=2"):
        reply = c.request("GET", uri, headers={"cookie": "session=good; other=1"})
        assert reply.status == 200
    assert len(app.calls) == 1
    assert post(make_client, proxy, bearer("app-token")).status == 200
    assert app.calls[1]["authorization"] == "Bearer app-token"

    assert post(make_client, proxy, {"cookie": "session=banned"}).status == 403
    assert post(make_client, proxy, {"cookie": "session=nobody"}).status == 401
    assert post(make_client, proxy, {}).status == 401
    assert len(upstream.requests) == 6


def test_forward_auth_down_fails_closed(keyrelay_factory, make_client, upstream) -> None:
    proxy = keyrelay_factory(
        rules(
            defaults={
                "auth": {
                    "mode": "forward",
                    "forward": {
                        "url": "http://127.0.0.1:9/auth",
                        "identity_header": "x-user",
                        "timeout": 1,
                    },
                }
            }
        )
    )
    reply = post(make_client, proxy, {"cookie": "session=good"})
    assert reply.status == 503
    assert reply.json()["type"].endswith("/auth-unavailable")
    assert upstream.requests == []


def test_none_beyond_loopback_warns_loudly(keyrelay_factory) -> None:
    proxy = keyrelay_factory(rules(), extra_args=["--listen-host", "0.0.0.0"], start=False)
    proxy.args[proxy.args.index("--listen-host") + 1] = "0.0.0.0"
    proxy.start()
    proxy.wait_for_output(r"NO client authentication for openai, fal")
