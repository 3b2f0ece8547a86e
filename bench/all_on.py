"""keyrelay with every optional feature on: the rules, options, environment and client headers.

The default rules.yaml plus, under `defaults:`, client authentication (static tokens) and rate
limits high enough never to refuse a benchmark request (so their whole cost is paid and no
request is turned away); the access log as JSON to a file; metrics are always collected.
With a Redis URL the limits are counted in Redis, as a cluster shares them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from bench.setting import REPO, AllOn

CLIENT_TOKEN = "bench-client-token-6a1f0c2e"
# The bench upstream's endpoints (bench/nginx.py) are none of OpenAI's own: the rules declare
# them as operations of the openai provider and open them, as a user opens a path of their own.
BENCH_OPERATIONS = {
    "bench.chat": {"op": "POST api.openai.com/v1/chat", "kind": "generate"},
    "bench.sse": {"op": "GET api.openai.com/v1/sse", "kind": "stream"},
    "bench.download": {"op": "GET api.openai.com/v1/download", "kind": "result"},
    "bench.upload": {"op": "POST api.openai.com/v1/upload", "kind": "upload"},
}


def default_rules(directory: Path) -> Path:
    """The default rules.yaml, with the bench's endpoints opened."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rules-default.yaml"
    path.write_text(yaml.safe_dump(_opened(), sort_keys=False))
    return path


def _opened() -> dict:
    rules = yaml.safe_load((REPO / "rules.yaml").read_text())
    openai = rules["providers"]["openai"]
    openai["operations"] = BENCH_OPERATIONS
    openai["allow"] = ["browser", *BENCH_OPERATIONS]
    return rules


def build(directory: Path, redis_url: str | None) -> AllOn:
    directory.mkdir(parents=True, exist_ok=True)
    rules = _opened()
    tokens = directory / "tokens.txt"
    tokens.write_text(f"bench-client:{hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()}\n")
    defaults = rules.setdefault("defaults", {})
    defaults["auth"] = {"mode": "tokens", "tokens": {"file": str(tokens)}}
    defaults["limits"] = {"rate": ["1000000/minute"], "concurrent": 100000}
    features = ["auth (tokens)", "rate + concurrency limits", "metrics", "JSON access log"]
    if redis_url:
        rules["limits_backend"] = {"redis": redis_url}
        features[1] += f" in Redis ({redis_url})"
    path = directory / "rules-all-on.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return AllOn(
        rules=path,
        options=[
            *("--set", "keyrelay_access_log=json"),
            *("--set", f"keyrelay_access_log_file={directory / 'access.log'}"),
        ],
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        features=features,
    )
