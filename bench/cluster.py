"""N keyrelay instances behind nginx (a real load balancer), sharing limits through Redis.

mitmproxy runs on one core; more throughput means more processes. Each instance is a plain
keyrelay (scripts/_mitm mitmdump) on its own loopback port; nginx balances by least
connections and keeps its upstream connections open. Limits are shared when the rules set
`limits_backend: {redis: ...}` (see docs/operations.md): every instance then counts in the
same Redis.

Run a cluster in the foreground:  scripts/cluster [--instances N] [--port P] [mitmdump args]
The benchmark starts the same shape through `start` (bench/__main__.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import nginx
from bench.procs import Proc, free_port
from bench.setting import REPO


def start_redis(workdir: Path) -> Proc:
    exe = os.environ.get("KEYRELAY_REDIS_SERVER") or shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not installed (scripts/_setup_redis.sh)")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return Proc("redis", argv, workdir / "redis.log", port=port)


def start(
    workdir: Path, instances: int, make_instance: Callable[[str], Proc], port: int
) -> list[Proc]:
    """The instances, then the balancer in front of them; all listening when this returns."""
    procs = [make_instance(f"keyrelay-{i + 1}") for i in range(instances)]
    try:
        for proc in procs:
            proc.wait_listening()
        conf = nginx.balancer_conf(workdir / "nginx-lb", port, [p.port for p in procs])
        procs.append(nginx.start("nginx-lb", workdir, port, conf))
        procs[-1].wait_listening()
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs


def _instance(workdir: Path, mitm_args: Sequence[str]) -> Callable[[str], Proc]:
    def make(name: str) -> Proc:
        port = free_port()
        argv = [str(REPO / "scripts/_mitm"), "mitmdump", "--listen-port", str(port), *mitm_args]
        return Proc(name, argv, workdir / f"{name}.log", port=port)

    return make


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=8080, help="the balancer's port")
    parser.add_argument("--redis", action="store_true", help="also start a local redis-server")
    args, mitm_args = parser.parse_known_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="keyrelay-cluster-"))
    procs: list[Proc] = []
    if args.redis:
        procs.append(start_redis(workdir))
        procs[0].wait_listening()
        print(f"redis: redis://127.0.0.1:{procs[0].port}/0 (point limits_backend.redis here)")
    procs += start(workdir, args.instances, _instance(workdir, mitm_args), args.port)
    print(f"keyrelay x{args.instances} behind nginx on 127.0.0.1:{args.port}; logs in {workdir}")
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        signal.sigwait(stop_signals)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
