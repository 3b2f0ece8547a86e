"""Auth pieces without a proxy: config errors, token store, credential lookup, identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.guard import rules, token_entry

from addon.auth.identity import Identity, anonymous
from addon.auth.presented import missing, presented, presented_at
from addon.auth.tokens import TokenError, TokenStore
from addon.config.auth import AuthSpec
from addon.config.model import ConfigError, read
from addon.config.rules import load


def test_an_identity_reads_as_kind_and_name() -> None:
    assert str(Identity("token", "ci")) == "token:ci"


@pytest.mark.parametrize(
    ("address", "identity"),
    [
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "ip:2001:db8:1:2::/64"),  # the same subscriber's other address
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("fe80::1%eth0", "ip:fe80::/64"),
        ("::ffff:192.0.2.7", "ip:192.0.2.7"),  # a dual-stack listener's IPv4 client
        ("::1", "ip:::1"),
        ("192.0.2.7", "ip:192.0.2.7"),
        ("unknown", "ip:unknown"),
    ],
)
def test_an_anonymous_ipv6_client_is_its_64(address: str, identity: str) -> None:
    assert str(anonymous(address)) == identity


def test_token_store() -> None:
    store = TokenStore(f"# comment\n{token_entry('a', 'x')}, {token_entry('b', 'y')}\n")
    assert len(store) == 2
    assert store.identify("y") == Identity("token", "b")
    assert store.identify("z") is None
    with pytest.raises(TokenError, match="entry 1"):
        TokenStore("a:not-a-hash")
    # The last token removed: a valid list that admits nobody (revocation, not a broken file).
    empty = TokenStore("# empty\n")
    assert len(empty) == 0 and empty.identify("x") is None


def test_presented_credential() -> None:
    spec = AuthSpec(mode="tokens", cookie="kr")
    assert presented(spec, {"authorization": "Bearer  abc "}.get) == "abc"
    assert presented(spec, {"authorization": "Basic abc"}.get) is None
    assert presented(spec, {"cookie": 'a=1; kr="tok"; kr=2'}.get) == "tok"
    assert presented(spec, {"cookie": "krx=1"}.get) is None
    custom = AuthSpec(mode="tokens", header="x-keyrelay-token")
    assert presented(custom, {"x-keyrelay-token": "t"}.get) == "t"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"mode": "magic"}, "auth.mode: must be one of none, tokens, jwt or forward"),
        ({"mode": "tokens"}, "auth.tokens: is required"),
        ({"mode": "tokens", "tokens": {"env": "A", "file": "b"}}, "auth.tokens: needs exactly one"),
        (
            {
                "mode": "jwt",
                "jwt": {"algorithms": ["HS256", "RS256"], "audience": "a", "issuer": "i"},
            },
            "HS256 cannot be combined",
        ),
        ({"mode": "jwt", "jwt": {"algorithms": ["none"]}}, "'none' is not one of"),
        (
            {"mode": "jwt", "jwt": {"algorithms": ["RS256"], "jwks": "https://x/j", "issuer": "i"}},
            "auth.jwt.audience: is required",
        ),
        ({"mode": "forward", "forward": {"url": "ftp://x", "identity_header": "x"}}, "http(s) URL"),
        ({"mode": "none", "cookie": "kr"}, "need an auth mode other than none"),
        ({"mode": "none", "jwt": {}}, "auth.jwt: only applies to mode: jwt"),
    ],
)
def test_auth_config_errors(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        read(AuthSpec, section, "rules.yaml", "auth")
    assert message in str(e.value) and str(e.value).startswith("rules.yaml: auth")


def test_sections_inherit_from_defaults_and_backend_parses(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        rules(
            top={"limits_backend": {"redis": "redis://127.0.0.1:1/0", "on_error": "open"}},
            defaults={
                "auth": {"mode": "tokens", "tokens": {"env": "T"}},
                "limits": {"rate": "5/second", "daily": 9},
            },
            fal={"auth": {"mode": "none"}},
        )
    )
    parsed = load(path, {})
    openai, fal = parsed.providers
    assert openai.auth.mode == "tokens" and fal.auth.mode == "none"
    assert [(w.name, w.amount, w.seconds) for w in fal.limits.windows] == [
        ("rate", 5, 1),
        ("daily", 9, 86400),
    ]
    assert parsed.limits_backend.redis == "redis://127.0.0.1:1/0"
    assert parsed.limits_backend.on_error == "open"


@pytest.mark.parametrize(
    ("top", "limits", "message"),
    [
        ({"limits_backend": {"redis": "http://x"}}, {}, "limits_backend.redis: must be a redis://"),
        ({"limits_backend": {"on_error": "maybe"}}, {}, "limits_backend.on_error"),
        ({}, {"rate": "often"}, "limits.rate[0]: 'often' is not a rate"),
        ({}, {"endpoints": [{"match": ["fal.run"]}]}, "limits.endpoints[0].match[0]"),
        ({}, {"concurrent": 0}, "limits.concurrent: must be at least 1"),
    ],
)
def test_limits_config_errors(tmp_path: Path, top: dict, limits: dict, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules(top=top, defaults={"limits": limits} if limits else None))
    with pytest.raises(ConfigError, match=None) as e:
        load(path, {})
    assert message in str(e.value)


def test_every_mode_the_rules_accept_has_its_authenticator() -> None:
    from addon.auth.modes import MODES as BUILT
    from addon.config.auth import MODES as ACCEPTED

    assert set(ACCEPTED) == set(BUILT)


@pytest.mark.parametrize(
    ("spec", "headers", "detail"),
    [
        (
            AuthSpec(mode="tokens"),
            {},
            "no credentials were sent; keyrelay looks in the Authorization header as Bearer <token>"
            " or a WebSocket subprotocol keyrelay-token.<token>",
        ),
        (  # the Anthropic SDK given keyrelay's token (or 'unused') as its apiKey
            AuthSpec(mode="tokens", cookie="kr"),
            {"x-api-key": "kr_secret", "cookie": "session=1"},
            "a credential came in x-api-key, which keyrelay does not read; keyrelay looks in the"
            " Authorization header as Bearer <token>, the cookie kr or a WebSocket subprotocol"
            " keyrelay-token.<token>",
        ),
        (  # fal's client given a key: `Authorization: Key ...`
            AuthSpec(mode="jwt"),
            {"authorization": "Key kr_secret"},
            "the Authorization header is not Bearer <token>; keyrelay looks in the Authorization"
            " header as Bearer <token> or a WebSocket subprotocol keyrelay-token.<token>",
        ),
        (  # keyrelay reads its own header: a token in Authorization is named as elsewhere
            AuthSpec(mode="tokens", header="x-keyrelay-token"),
            {"authorization": "Bearer kr_secret", "xi-api-key": "kr_secret"},
            "a credential came in authorization, xi-api-key, which keyrelay does not read;"
            " keyrelay looks in the x-keyrelay-token header or a WebSocket subprotocol"
            " keyrelay-token.<token>",
        ),
    ],
)
def test_a_missing_credential_says_where_keyrelay_looks(
    spec: AuthSpec, headers: dict[str, str], detail: str
) -> None:
    assert presented(spec, headers.get) is None
    assert missing(spec, headers.get) == detail
    assert "kr_secret" not in detail


def test_a_credential_is_found_with_its_place() -> None:
    spec = AuthSpec(mode="tokens", cookie="kr")
    bearer = {"authorization": "Bearer t"}
    assert presented_at(spec, bearer.get) == ("t", "the Authorization header")
    assert presented_at(spec, {"cookie": "kr=t"}.get) == ("t", "the cookie kr")
    socket = {"upgrade": "websocket", "sec-websocket-protocol": "keyrelay, keyrelay-token.t"}
    assert presented_at(spec, socket.get) == ("t", "a WebSocket subprotocol")
    custom = AuthSpec(mode="tokens", header="x-keyrelay-token")
    own = {"x-keyrelay-token": "t"}
    assert presented_at(custom, own.get) == ("t", "the x-keyrelay-token header")
