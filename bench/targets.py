"""What is measured: the upstream itself, and each proxy in front of it, started side by side.

Every target relays the same four upstream endpoints (/v1/chat, /v1/sse, /v1/upload,
/v1/download); a Target knows the URL and headers a client uses to reach each through it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import all_on, nginx
from bench.procs import Proc, children, free_port
from bench.setting import REPO, Setting

# Bare mitmdump streams bodies over 1 MiB, as keyrelay's transport defaults do; smaller ones
# (and SSE, which has no length) stay buffered. The mitm-st column streams everything.
BARE_MITMDUMP_STREAM = "1m"
# scripts/_mitm runs mitmproxy with PYTHONOPTIMIZE=1 unless told otherwise: every mitmdump here
# runs as keyrelay's does, or the keyrelay columns would be set against a slower engine.
PYTHONOPTIMIZE = os.environ.get("PYTHONOPTIMIZE", "1")


@dataclass
class Target:
    key: str  # column name in the table
    host: str
    port: int
    tls_name: str | None = None  # SNI and Host when the client speaks TLS (none does now)
    prefix: str = "/v1"  # path prefix the client uses for /v1/...
    headers: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    fal_style: bool = False  # fal: one proxy path, the real URL in x-fal-target-url

    def path(self, endpoint: str) -> str:
        """The request target for upstream path /v1/<endpoint> (query allowed)."""
        if self.fal_style:
            return "/api/fal/proxy"
        return f"{self.prefix}/{endpoint}"

    def request_headers(self, endpoint: str) -> dict[str, str]:
        headers = dict(self.headers)
        if self.fal_style:
            headers["x-fal-target-url"] = f"https://fal.run/v1/{endpoint}"
        return headers

    @property
    def url_base(self) -> str:
        scheme = "https" if self.tls_name else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def memory_pids(self) -> list[int]:
        """The processes doing the proxying (nginx: the worker, not the master)."""
        pids: list[int] = []
        for proc in self.procs:
            if proc.name.startswith("nginx"):
                pids.extend(children(proc.pid))
            elif proc.name != "redis":
                pids.append(proc.pid)
        return pids

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_KEY"))}
    env.pop("PYTHONUNBUFFERED", None)  # as deployed: stdout (a file here) block-buffered
    env["PYTHONOPTIMIZE"] = PYTHONOPTIMIZE
    env.update(**extra)
    return env


def direct(s: Setting) -> Target:
    return Target("direct", "127.0.0.1", s.upstream_plain_port)


def bare_mitmdump(
    s: Setting,
    key: str = "mitmdump",
    stream: str = BARE_MITMDUMP_STREAM,
    scripts: Sequence[str] = (),
) -> Target:
    port = free_port()
    argv = [
        str(REPO / ".venv/bin/mitmdump"),
        *("--mode", f"reverse:https://127.0.0.1:{s.upstream_port}"),
        *("--listen-host", "127.0.0.1", "--listen-port", str(port)),
        *("--set", f"confdir={s.workdir / ('mitm-' + key)}"),
        *("--set", f"ssl_verify_upstream_trusted_ca={s.tls.ca_cert}"),
        *("--set", "flow_detail=0"),
        *("--set", f"stream_large_bodies={stream}"),
        *(arg for script in scripts for arg in ("-s", script)),
    ]
    proc = Proc(key, argv, s.workdir / f"{key}.log", port=port, env=_env())
    return Target(key, "127.0.0.1", port, procs=[proc])


def tuned_mitmdump(s: Setting) -> Target:
    """Bare mitmdump with keyrelay's engine tuning only (addon/dispatch.py, the hook dispatch
    table; addon/fast_paths.py, header lookups, option reads and hook arguments in one step
    each): the engine keyrelay runs on."""
    scripts = [str(REPO / "addon/dispatch.py"), str(REPO / "addon/fast_paths.py")]
    return bare_mitmdump(s, "mitm+tbl", scripts=scripts)


def streaming_mitmdump(s: Setting) -> Target:
    """Bare mitmdump streaming every body: the engine's own floor for SSE and open streams."""
    return bare_mitmdump(s, "mitm-st", "1")


def keyrelay_proc(
    s: Setting,
    name: str,
    rules: Path,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Proc:
    port = free_port()
    argv = [
        str(REPO / "scripts/_mitm"),
        "mitmdump",
        *("--listen-port", str(port)),
        *("--set", f"confdir={s.workdir / ('mitm-' + name)}"),
        *("--set", f"keyrelay_rules={rules}"),
        *("--set", f"keyrelay_connect_to=api.openai.com:443=127.0.0.1:{s.upstream_port}"),
        *("--set", f"ssl_verify_upstream_trusted_ca={s.tls.ca_cert}"),
        *("--set", "flow_detail=0"),
        # Every load here comes from 127.0.0.1, as from a balancer in front: the cap per client
        # address (256) would refuse the 500 open streams, which are what that row measures.
        *("--set", "keyrelay_max_connections_per_address=0"),
        *extra,
    ]
    child_env = _env(OPENAI_API_KEY=s.provider_key, **(env or {}))
    return Proc(name, argv, s.workdir / f"{name}.log", port=port, env=child_env)


def keyrelay_default(s: Setting) -> Target:
    proc = keyrelay_proc(s, "keyrelay", all_on.default_rules(s.workdir))
    return Target("keyrelay", "127.0.0.1", proc.port, prefix="/api/openai", procs=[proc])


def keyrelay_all_on(s: Setting) -> Target:
    proc = keyrelay_proc(s, "keyrelay-all", s.all_on.rules, s.all_on.options, s.all_on.env)
    return Target(
        "kr+all",
        "127.0.0.1",
        proc.port,
        prefix="/api/openai",
        headers=dict(s.all_on.headers),
        procs=[proc],
    )


def nginx_peer(s: Setting) -> Target:
    port = free_port()
    conf = nginx.peer_conf(
        s.workdir / "nginx-peer", port, s.upstream_port, s.tls.ca_cert, s.provider_key
    )
    proc = nginx.start("nginx-peer", s.workdir, port, conf)
    return Target("nginx", "127.0.0.1", port, prefix="/api/openai", procs=[proc])


def fal_express(s: Setting) -> Target:
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is not installed (Debian: apt-get install nodejs npm)")
    fal_dir = REPO / "bench/fal"
    if not (fal_dir / "node_modules/@fal-ai/server-proxy").exists():
        raise FileNotFoundError("bench/fal/node_modules is missing (scripts/bench runs npm ci)")
    port = free_port()
    env = _env(
        PORT=str(port),
        FAL_KEY=s.provider_key,
        BENCH_UPSTREAM=f"127.0.0.1:{s.upstream_port}",
        BENCH_CA=str(s.tls.ca_cert),
        NODE_ENV="production",
    )
    proc = Proc("fal", [node, "server.mjs"], s.workdir / "fal.log", port=port, env=env, cwd=fal_dir)
    return Target("fal", "127.0.0.1", port, fal_style=True, procs=[proc])


# In table order. The cluster (bench/cluster.py) is added after these.
BUILDERS: dict[str, Callable[[Setting], Target]] = {
    "direct": direct,
    "mitmdump": bare_mitmdump,
    "mitm+tbl": tuned_mitmdump,
    "mitm-st": streaming_mitmdump,
    "keyrelay": keyrelay_default,
    "kr+all": keyrelay_all_on,
    "nginx": nginx_peer,
    "fal": fal_express,
}
