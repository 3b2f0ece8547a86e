"""Provider keys: where they come from, how they are sent, and which client credentials go."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote_plus

from pydantic import AfterValidator, model_validator

from addon.config.key_sources import EnvSource, PoolSpec, Sources, TenantSpec
from addon.config.model import Text, fail, section

__all__ = [
    "CLIENT_ACCOUNT_HEADERS",
    "CLIENT_CREDENTIAL_HEADERS",
    "CLIENT_CREDENTIAL_QUERY",
    "Credential",
    "EnvSource",
]

# Headers that carry a credential in one provider's API or another. The client never
# chooses the key: all of them are removed before keyrelay sets its own.
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "xi-api-key",
        "x-goog-api-key",
        "x-fal-key",
        "cookie",
        "sec-websocket-protocol",  # its credential entries only (below); the rest is forwarded
    }
)

# A browser cannot set headers on a WebSocket: it presents keyrelay's credential as a
# subprotocol, `openai-insecure-api-key.<token>` (OpenAI's browser SDK given keyrelay's token as
# its apiKey) or `keyrelay-token.<token>` (any other client, beside the `keyrelay` protocol,
# which keyrelay answers when the upstream chose none: a browser fails a socket whose answer
# names none of those it offered).
WEBSOCKET_PROTOCOLS = "sec-websocket-protocol"
KEYRELAY_PROTOCOL = "keyrelay"
_CREDENTIAL_PROTOCOLS = ("openai-insecure-api-key.", "keyrelay-token.")


def protocols(value: str | None) -> list[str]:
    """The subprotocols a Sec-WebSocket-Protocol value offers, in order."""
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def protocol_credential(protocol: str) -> str | None:
    """The credential a subprotocol carries, or None when it carries none."""
    for prefix in _CREDENTIAL_PROTOCOLS:
        if protocol.startswith(prefix):
            return protocol[len(prefix) :] or None
    return None


def upstream_protocols(value: str) -> str | None:
    """What goes upstream of an offer: every protocol but keyrelay's own and those carrying a
    credential; None when nothing is left."""
    kept = [
        p for p in protocols(value) if p != KEYRELAY_PROTOCOL and protocol_credential(p) is None
    ]
    return ", ".join(kept) or None


# Query parameters that carry a credential: Google's `key` (its APIs read it as they read
# x-goog-api-key) and OAuth's `access_token` (@google/genai sends Live API tokens in it). Removed
# from every upstream request and masked wherever a flow is kept, as the headers are.
CLIENT_CREDENTIAL_QUERY = frozenset({"key", "access_token"})


def is_credential_param(param: str) -> bool:
    """Whether one `name=value` of a query is a credential, its name read as a server may read
    it: unescaped and without case (`K%65y=` too)."""
    name = param.partition("=")[0]
    return unquote_plus(name).strip().lower() in CLIENT_CREDENTIAL_QUERY


# Headers that pick the account, organisation or project a key acts for (the providers' SDKs
# send them). A client's choice would be charged to the operator's key, and a foreign one gets
# a 401 that looks like a bad key: removed too; the operator may `set:` them per provider.
CLIENT_ACCOUNT_HEADERS = frozenset(
    {
        "openai-organization",
        "openai-project",
        "anthropic-workspace-id",
        "anthropic-organization-id",
        "x-goog-user-project",  # the Google Cloud project billed and whose quota counts
    }
)


def _one_key(fmt: str) -> str:
    if fmt.count("{key}") != 1:
        fail("must contain '{key}' exactly once")
    return fmt


@section
class Credential:
    header: Annotated[Text, AfterValidator(str.lower)]
    format: Annotated[Text, AfterValidator(_one_key)] = "{key}"  # with one "{key}"
    key: Sources = ()  # alternatives, the first available wins; none with a pool or tenants
    pool: PoolSpec | None = None  # instead of `key:`: several keys, round-robin
    tenants: TenantSpec | None = None  # per-tenant keys; `key`/`pool` is then the fallback

    @model_validator(mode="after")
    def _one_source_of_keys(self) -> Credential:
        if self.pool and self.key:
            fail("use either key or pool, not both", "pool")
        if not (self.key or self.pool or self.tenants):
            fail("is required", "key")
        if self.tenants and self.tenants.fallback == "shared" and not (self.pool or self.key):
            fail("fallback: shared needs a key or a pool beside tenants", "tenants.fallback")
        return self

    def header_value(self, key: str) -> str:
        return self.format.replace("{key}", key)

    def describe_missing(self) -> str:
        sources = self.key or (self.pool.keys if self.pool else ())
        return " or ".join(s.describe() for s in sources) or "a key for this tenant"
