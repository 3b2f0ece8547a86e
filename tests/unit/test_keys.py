"""The pure parts of key sources: the credential schema, key ids, retry-after, tenants, pools,
and what KeyStore hands to redaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
import yaml
from mitmproxy.test import tflow

from addon import flowstate
from addon.caller import Caller
from addon.config.credential import Credential
from addon.config.key_sources import CommandSource, EnvSource, FileSource, PoolSpec
from addon.config.model import ConfigError, read
from addon.config.rules import parse
from addon.keys.ids import clean_key, key_id, retry_after_seconds
from addon.keys.live import EnvKey
from addon.keys.pool import Cooldowns, KeyPool, cooldown_for
from addon.keys.store import KeyStore
from addon.keys.tenants import parse_table, tenant_of
from addon.problems import Refusal
from addon.resources import Resources


def credential(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return read(Credential, yaml.safe_load(text), str(tmp_path / "rules.yaml"), "c")


def test_existing_env_forms_still_parse(tmp_path: Path) -> None:
    c = credential(tmp_path, "{header: X, key: [{env: A}, {env: [ID, SECRET]}]}")
    assert c.key == (EnvSource(("A",)), EnvSource(("ID", "SECRET")))
    assert c.key[1].read({"ID": "i", "SECRET": "s"}) == "i:s"
    assert c.pool is None and c.tenants is None


def test_file_and_command_sources(tmp_path: Path) -> None:
    c = credential(
        tmp_path,
        "{header: x, key: [{file: secrets/k}, {command: 'vault kv get -field=k x', refresh: 30}]}",
    )
    assert c.key[0] == FileSource(tmp_path / "secrets" / "k")
    assert c.key[1] == CommandSource(("vault", "kv", "get", "-field=k", "x"), 30.0, 10.0)
    assert c.describe_missing() == "its key file (k) or its key command (vault)"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("{header: x, key: {file: a, env: B}}", "c.key[0]", "a key source is"),
        ("{header: x, key: {command: []}}", "c.key[0].command", "needs a program"),
        ("{header: x, key: {command: 3}}", "c.key[0].command", "list of strings"),
        ("{header: x, key: {file: a, refresh: 3}}", "c.key[0].refresh", "unknown key"),
        ("{header: x, pool: {keys: [{env: A}]}}", "c.pool.keys", "at least two"),
        ("{header: x, pool: {keys: [{env: A}, {env: A}]}}", "c.pool.keys", "same source"),
        ("{header: x, key: {env: A}, pool: {keys: [{env: A}, {env: B}]}}", "c.pool", "not both"),
        ("{header: x, tenants: {claim: org}}", "c.tenants", "exactly one of"),
        ("{header: x, tenants: {file: t, fallback: shared}}", "c.tenants.fallback", "needs a key"),
        ("{header: x, tenants: {file: t, fallback: maybe}}", "c.tenants.fallback", "refuse or"),
        ("{header: x}", "c.key", "is required"),
    ],
)
def test_schema_errors_name_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as e:
        credential(tmp_path, text)
    assert e.value.key == key
    assert reason in e.value.reason


def test_key_id_is_stable_short_and_not_the_key() -> None:
    assert key_id("sk-abcdef123456") == key_id("sk-abcdef123456")
    assert key_id("sk-abcdef123456") != key_id("sk-abcdef123457")
    assert len(key_id("sk-abcdef123456")) == 8
    assert "3456" not in key_id("sk-abcdef123456")


def test_clean_key() -> None:
    assert clean_key("  sk-1\n") == "sk-1"
    assert clean_key("\n") is None
    assert clean_key("sk-1\nX-Evil: 1") is None


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now.timestamp()) == 30.0


def test_cooldown_for() -> None:
    spec = PoolSpec((EnvSource(("A",)), EnvSource(("B",))), cooldown=60, max_cooldown=120)
    assert cooldown_for(429, "5", spec) == 5
    assert cooldown_for(429, None, spec) == 60
    assert cooldown_for(429, "100000", spec) == 120
    assert cooldown_for(401, "5", spec) == 60  # a refused key: retry-after does not apply
    assert cooldown_for(500, "5", spec) is None


def test_tenant_of() -> None:
    assert tenant_of(Caller("token:alice"), None) == "alice"
    assert tenant_of(Caller("jwt:org:acme"), None) == "org:acme"
    assert tenant_of(Caller("ip:127.0.0.1"), None) is None  # anonymous: nobody's tenant
    assert tenant_of(Caller("jwt:u1", {"org": "acme"}), "org") == "acme"
    assert tenant_of(Caller("jwt:u1"), "org") is None  # never the identity instead


def test_parse_table() -> None:
    assert parse_table({"alice": " k-a\n", 42: "k-42"}) == {"alice": "k-a", "42": "k-42"}
    assert parse_table(None) == {}
    with pytest.raises(ValueError):
        parse_table(["alice"])
    with pytest.raises(ValueError):
        parse_table({"alice": {"nested": 1}})


def test_pool_round_robin_skips_resting_keys() -> None:
    spec = PoolSpec((EnvSource(("A",)), EnvSource(("B",)), EnvSource(("C",))), 60, 900)
    env = {"A": "key-a-000", "B": "key-b-000", "C": "key-c-000"}
    members = [EnvKey(s, f"p{i}", env) for i, s in enumerate(spec.keys)]

    async def run() -> list[str | float | None]:
        pool = KeyPool("p", members, spec, Cooldowns("p", None))
        out: list[str | float | None] = []
        for _ in range(3):
            picked = await pool.pick()
            out.append(picked if isinstance(picked, float | None) else picked.value)
        pool.feedback(key_id("key-b-000"), 429, "10")
        pool.feedback(key_id("not-a-member"), 429, "10")
        for _ in range(3):
            picked = await pool.pick()
            out.append(picked if isinstance(picked, float | None) else picked.value)
        pool.feedback(key_id("key-a-000"), 401, None)
        pool.feedback(key_id("key-c-000"), 429, None)
        last = await pool.pick()
        out.append(round(last) if isinstance(last, float) else None)
        return out

    assert asyncio.run(run()) == [
        "key-a-000",
        "key-b-000",
        "key-c-000",
        "key-a-000",
        "key-c-000",
        "key-a-000",
        10,  # all resting: the soonest comes back in 10 s
    ]


RULES = """
providers:
  openai:
    match: {prefix: /api/openai}
    upstream: https://api.openai.com/v1
    credential:
      header: authorization
      format: "Bearer {key}"
      pool: {keys: [{env: A}, {file: b.key}]}
      tenants: {file: tenants.yaml, fallback: shared}
"""


def test_keys_a_reload_drops_stay_masked_for_the_life_of_the_process(tmp_path: Path) -> None:
    """An env source is rebuilt at each reload, and a reload may drop a pool member, a tenant
    table or a whole provider: a flow still in flight (or saved at shutdown) may carry any."""
    (tmp_path / "b.key").write_text("dropped-file-key\n")
    (tmp_path / "tenants.yaml").write_text("alice: dropped-tenant-key\n")
    rules_file = tmp_path / "rules.yaml"
    resources = Resources()

    def load(text: str, env: dict[str, str]) -> KeyStore:
        rules = parse(yaml.safe_load(text), rules_file, env)
        with resources.reload() as live:
            return KeyStore(rules, live)

    first = load(RULES, {"A": "rotated-env-key-1"})
    assert "rotated-env-key-1" in first.secrets()
    second = load(RULES, {"A": "rotated-env-key-2"})
    assert {"rotated-env-key-1", "rotated-env-key-2"} <= set(second.secrets())
    credential = RULES[RULES.index("      pool:") :]
    without_openai = RULES.replace("openai", "other").replace(credential, "      key: {env: C}\n")
    without_openai += '    allow: ["* api.other.com/**"]\n'
    third = load(without_openai, {"C": "the-only-key-left"})
    secrets = third.secrets()
    for value in (
        "rotated-env-key-1",
        "rotated-env-key-2",
        "dropped-file-key",
        "dropped-tenant-key",
    ):
        assert value in secrets
    assert secrets["rotated-env-key-1"] == "<A>"
    resources.stop()


def test_keystore_masks_every_pool_rotated_and_tenant_key(tmp_path: Path) -> None:
    (tmp_path / "b.key").write_text("pool-file-key-1\n")
    (tmp_path / "tenants.yaml").write_text("alice: tenant-alice-key\nbob: tenant-bob-key\n")
    rules_file = tmp_path / "rules.yaml"
    rules = parse(yaml.safe_load(RULES), rules_file, {"A": "pool-env-a"})
    resources = Resources()
    with resources.reload() as live:
        store = KeyStore(rules, live)
    file_key = next(k for k in store._live)
    (tmp_path / "b.key").write_text("pool-file-key-2\n")
    file_key.reload()  # what the watcher does when the file changes

    secrets = store.secrets()
    assert secrets["pool-env-a"] == "<A>"
    assert secrets["pool-file-key-1"] == secrets["pool-file-key-2"] == "<key file b.key>"
    assert secrets["tenant-alice-key"] == f"<tenant key {key_id('tenant-alice-key')}>"
    assert "tenant-bob-key" in secrets

    provider = rules.providers[0]

    async def picks() -> list[str]:
        out = []
        for identity in ("token:alice", "token:carol", "ip:127.0.0.1"):
            flow = tflow.tflow()
            key = await store.requestheaders(flow, provider, Caller(identity))
            assert not isinstance(key, Refusal)
            assert flowstate.of(flow)["key_id"] == key_id(key.value)
            out.append(key.value)
        resources.stop()
        return out

    alice, carol, anonymous = asyncio.run(picks())
    assert alice == "tenant-alice-key"
    assert carol in ("pool-env-a", "pool-file-key-2") and anonymous in (
        "pool-env-a",
        "pool-file-key-2",
    )
    assert carol != anonymous  # round-robin


def test_redis_tenants_need_a_redis_server(tmp_path: Path) -> None:
    text = RULES.replace("{file: tenants.yaml, fallback: shared}", "{redis_hash: t}")
    rules_file = tmp_path / "rules.yaml"
    rules = parse(yaml.safe_load(text), rules_file, {"A": "x-key-000"})
    with pytest.raises(ConfigError) as e:
        KeyStore(rules)
    assert e.value.key == "providers.openai.credential.tenants.redis_hash"
    assert "limits_backend.redis" in e.value.reason
