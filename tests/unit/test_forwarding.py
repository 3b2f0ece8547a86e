import dataclasses

from support.repo import RULES

from addon.config.envfile import parse as parse_env
from addon.config.provider import Provider
from addon.config.rules import load
from addon.routing.connect_to import parse as parse_connect_to
from addon.routing.forwarding import upstream_headers, upstream_target

RULES = {p.name: p for p in load(RULES, {}).providers}

BROWSER_HEADERS = [
    (b"Host", b"localhost:8080"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"2"),
    (b"Accept", b"text/event-stream"),
    (b"Authorization", b"Bearer dummy-key"),
    (b"X-Api-Key", b"client-chosen"),
    (b"xi-api-key", b"client-chosen"),
    (b"Cookie", b"session=1"),
    (b"Origin", b"https://app.example"),
    (b"Referer", b"https://app.example/page"),
    (b"Sec-Fetch-Mode", b"cors"),
    (b"X-Forwarded-For", b"10.0.0.1"),
    (b"Forwarded", b"for=10.0.0.1"),
    (b"Connection", b"keep-alive"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Accept-Encoding", b"gzip, br"),
    (b"anthropic-version", b"2023-06-01"),
    (b"x-stainless-os", b"Linux"),
    (b"x-fal-target-url", b"https://fal.run/x"),
    (b"x-fal-queue-priority", b"normal"),
    (b"User-Agent", b"test"),
    (b"OpenAI-Organization", b"org-bogus"),
    (b"OpenAI-Project", b"proj-bogus"),
    (b"anthropic-workspace-id", b"wrkspc-bogus"),
]


def headers_for(provider: Provider, key: str = "KEY", **kwargs: bool) -> list[tuple[str, str]]:
    fields = upstream_headers(
        BROWSER_HEADERS,
        provider,
        provider.credential.header,
        provider.credential.header_value(key),
        **kwargs,
    )
    return [(n.decode().lower(), v.decode()) for n, v in fields]


def names(fields: list[tuple[str, str]]) -> list[str]:
    return [n for n, _ in fields]


def test_client_credentials_and_browser_context_never_go_upstream() -> None:
    sent = headers_for(RULES["anthropic"])
    for gone in (
        "authorization",
        "xi-api-key",
        "cookie",
        "origin",
        "referer",
        "sec-fetch-mode",
        "x-forwarded-for",
        "forwarded",
        "connection",
        "keep-alive",
        "openai-organization",  # the client must not choose the account the key acts for
        "openai-project",
        "anthropic-workspace-id",
    ):
        assert gone not in names(sent)
    assert [v for n, v in sent if n == "x-api-key"] == ["KEY"]


def test_provider_headers_pass_and_encoding_is_identity() -> None:
    sent = dict(headers_for(RULES["anthropic"]))
    assert sent["anthropic-version"] == "2023-06-01"
    assert sent["x-stainless-os"] == "Linux"
    assert sent["accept-encoding"] == "identity"
    assert sent["content-length"] == "2"


def test_bearer_key_replaces_the_clients_dummy_key() -> None:
    sent = headers_for(RULES["openai"])
    assert [v for n, v in sent if n == "authorization"] == ["Bearer KEY"]


def test_fal_forwards_only_its_list_but_keeps_framing() -> None:
    sent = headers_for(RULES["fal"])
    assert set(names(sent)) == {
        "content-type",
        "content-length",
        "accept",
        "user-agent",
        "x-fal-queue-priority",
        "x-fal-client-proxy",
        "accept-encoding",
        "authorization",
    }
    assert dict(sent)["authorization"] == "Key KEY"
    assert "x-fal-target-url" not in names(sent)


def test_elevenlabs_gets_an_accept_default_only_when_missing() -> None:
    provider = RULES["elevenlabs"]
    without_accept = [f for f in BROWSER_HEADERS if f[0].lower() != b"accept"]
    fields = upstream_headers(without_accept, provider, "xi-api-key", "K")
    assert (b"accept", b"audio/mpeg") in fields
    assert dict(headers_for(provider))["accept"] == "text/event-stream"


def test_websocket_handshake_keeps_upgrade() -> None:
    fields = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    sent = upstream_headers(fields, RULES["elevenlabs"], "xi-api-key", "K", websocket=True)
    assert (b"Upgrade", b"websocket") in sent and (b"Connection", b"Upgrade") in sent
    assert (b"Upgrade", b"websocket") not in upstream_headers(fields, RULES["elevenlabs"], "k", "K")


def test_connect_to_parses_and_names_bad_entries() -> None:
    assert parse_connect_to(["API.openai.com:443=127.0.0.1:9443", "x.io:443=[::1]:1"]) == {
        ("api.openai.com", 443): ("127.0.0.1", 9443),
        ("x.io", 443): ("::1", 1),
    }
    for bad in ["api.openai.com=127.0.0.1:1", "a:443=b", "a:443=b:99999", "a:x=b:1"]:
        try:
            parse_connect_to([bad])
        except ValueError as e:
            assert bad in str(e)
        else:
            raise AssertionError(bad)


def test_dotenv_syntax() -> None:
    assert parse_env(
        "# comment\nexport A=1\nB = 'two words'\nC=\"x#y\"\nD=v # trailing\nnot a line\n"
    ) == {"A": "1", "B": "two words", "C": "x#y", "D": "v"}


def test_the_operator_may_set_an_account_header() -> None:
    provider = RULES["openai"]
    policy = dataclasses.replace(provider.headers, set=(("OpenAI-Organization", "org-ours"),))
    sent = headers_for(dataclasses.replace(provider, headers=policy))
    assert [v for n, v in sent if n == "openai-organization"] == ["org-ours"]


def test_gemini_gets_its_key_header_once_and_never_the_clients() -> None:
    gemini = RULES["gemini"]
    client = [
        *BROWSER_HEADERS,
        (b"x-goog-api-key", b"client-chosen"),
        (b"X-HTTP-Method-Override", b"GET"),
        (b"X-Goog-User-Project", b"someone-elses-project"),
    ]
    fields = upstream_headers(client, gemini, "x-goog-api-key", "SERVER")
    sent = [(n.decode().lower(), v.decode()) for n, v in fields]
    assert [v for n, v in sent if n == "x-goog-api-key"] == ["SERVER"]
    assert "x-http-method-override" not in names(sent)  # the method checked is the one run
    assert "x-goog-user-project" not in names(sent)  # the client never picks who pays
    assert "client-chosen" not in {v for _, v in sent}


def test_a_credential_in_the_query_never_goes_upstream() -> None:
    path = "/v1beta/models/m:streamGenerateContent"
    assert upstream_target(f"{path}?alt=sse&key=AIzaClient") == f"{path}?alt=sse"
    assert upstream_target(f"{path}?key=AIzaClient") == path
    assert upstream_target(f"{path}?KEY=a&k%65y=b&key&alt=sse&access_token=t") == f"{path}?alt=sse"
    # Everything else goes as sent, byte for byte, and a query without one is left alone.
    assert (
        upstream_target("/v1/models?pageSize=5&x=%2F&keys=1")
        == "/v1/models?pageSize=5&x=%2F&keys=1"
    )
    assert upstream_target("/v1/models?") == "/v1/models?"
    assert upstream_target("/v1/models") == "/v1/models"
