"""fal's token endpoint through the real mitmdump: closed by default, and never a token for an
app outside the endpoint allowlist."""

from __future__ import annotations

import json

from support.guard import rules
from support.repo import RULES as RULES_FILE


def test_tokens_are_closed_by_default_and_a_year_long_one_is_refused_when_opened(
    keyrelay_factory, make_client, upstream
) -> None:
    short = {"allowed_apps": ["any-owner/any-app"], "token_expiration": 120}
    target = {"x-fal-target-url": "https://rest.fal.ai/tokens/"}
    closed = make_client(keyrelay_factory().port)  # the repo's rules.yaml: minting is closed
    refused = closed.post("/api/fal/proxy", json=short, headers=target)
    assert refused.status == 403 and "add 'tokens' to providers.fal.allow" in refused.text
    assert upstream.requests == []
    opened = RULES_FILE.read_text().replace(
        "profile: fal\n", "profile: fal\n    allow: [browser, tokens]\n"
    )
    proxy = keyrelay_factory(opened)  # fal without endpoints:
    client = make_client(proxy.port)
    year = {"allowed_apps": ["any-owner/any-app"], "token_expiration": 31536000}
    refused = client.post("/api/fal/proxy", json=year, headers=target)
    assert refused.status == 403 and refused.json()["type"].endswith("/token-not-allowed")
    short = {"allowed_apps": ["any-owner/any-app"], "token_expiration": 120}
    assert client.post("/api/fal/proxy", json=short, headers=target).status == 200
    assert upstream.only_request().json() == short


def test_token_endpoint_stays_within_the_allowlist_end_to_end(
    keyrelay_factory, make_client, upstream
) -> None:
    fal = {
        "allow": ["* fal.run/**", "* queue.fal.run/**", "POST rest.fal.ai/tokens/"],
        # As rules.yaml suggests: the allowlist guards the model hosts, so tokens/ is routed.
        "endpoints": {"allow": ["fal-ai/flux/dev"], "hosts": ["fal.run", "queue.fal.run"]},
    }
    proxy = keyrelay_factory(rules(fal=fal))
    client = make_client(proxy.port)

    def mint(grant: object, **headers: str) -> str:
        target = {"x-fal-target-url": "https://rest.fal.ai/tokens/", **headers}
        reply = client.post("/api/fal/proxy", json=grant, headers=target)
        return f"{reply.status} {reply.json().get('type', '').rsplit('/', 1)[-1]}"

    veo = {"allowed_apps": ["fal-ai/veo3"], "token_expiration": 86400}
    # A token for fal-ai/veo3 would run it directly at fal, past the allowlist.
    assert mint(veo) == "403 token-not-allowed"
    assert mint({"allowed_apps": ["flux"], "token_expiration": 86400}) == "403 token-not-allowed"
    assert mint({"allowed_apps": ["flux"], "token_expiration": 120}) == "200 "
    assert mint(veo, **{"content-type": "text/plain"}) == "415 unchecked-body"
    assert upstream.only_request().json() == {"allowed_apps": ["flux"], "token_expiration": 120}
    chunked = client.request(
        "POST",
        "/api/fal/proxy",
        [json.dumps(veo).encode()],
        {"x-fal-target-url": "https://rest.fal.ai/tokens/", "content-type": "application/json"},
    )
    assert chunked.status == 411  # a body that cannot be buffered whole is never streamed on
    assert len(upstream.requests) == 1
