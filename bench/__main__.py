"""scripts/bench: keyrelay against bare mitmdump, nginx and fal's Express proxy, one table.

Everything runs on this machine, on loopback, against the same upstream (nginx with TLS from a
throwaway CA, and a Python SSE server behind it). A target that cannot start is reported with
the reason and its column stays empty; every other failure stops the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import all_on, cluster, load, table
from bench.procs import Proc, StartError, free_port, raise_fd_limit
from bench.setting import (
    MIB,
    Setting,
    Sizes,
    make_payloads,
    make_tls,
    start_upstream,
)
from bench.targets import BARE_MITMDUMP_STREAM, BUILDERS, PYTHONOPTIMIZE, Target, keyrelay_proc

CLUSTER = "2kr+lb"
PROVIDER_KEY = "bench-provider-key-0123456789"
SETTLE_SECONDS = 2.0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def cluster_target(s: Setting) -> Target:
    """Two kr+all instances behind nginx, their limits shared in one Redis."""
    redis = cluster.start_redis(s.workdir)
    procs = [redis]
    redis.wait_listening()
    rules = all_on.build(s.workdir / "cluster", f"redis://127.0.0.1:{redis.port}/0")

    def make(name: str) -> Proc:
        return keyrelay_proc(s, name, rules.rules, rules.options, rules.env)

    procs += cluster.start(s.workdir, 2, make, free_port())
    headers = dict(rules.headers)
    return Target(
        CLUSTER, "127.0.0.1", procs[-1].port, prefix="/api/openai", headers=headers, procs=procs
    )


class Run:
    def __init__(self, s: Setting, targets: dict[str, Target]) -> None:
        self.s, self.targets = s, targets
        self.results: dict[str, dict[str, float | None]] = {k: {} for k in targets}
        self.notes: list[str] = []
        self.ctx = s.tls.client_context()

    def measure(self, what: str, fn: Callable[[Target], dict[str, float | None]]) -> None:
        for key, target in self.targets.items():
            started = time.monotonic()
            try:
                figures = fn(target)
            except load.LoadError as e:
                self.notes.append(f"{key}: {what}: {e}")
                log(f"{key:9} {what}: FAILED: {e}")
                continue
            self.results[key].update(figures)
            shown = ", ".join(f"{k}={v:.2f}" for k, v in figures.items() if v is not None)
            log(f"{key:9} {what}: {shown} ({time.monotonic() - started:.1f}s)")

    def post(self) -> None:
        """Round after round, each target in turn: a slow spell of this shared machine falls on
        every column alike, not on whichever ran then. Per target and concurrency, the run with
        the median rate counts (its latencies with it), and the median CPU per request."""
        z = self.s.sizes
        runs: dict[tuple[str, int], list[load.PostResult]] = {}
        failed: set[str] = set()

        def each(connections: int, seconds: float, kept: bool = True) -> None:
            for key, target in self.targets.items():
                if key in failed:
                    continue
                try:
                    result = load.wrk_post(target, connections, seconds)
                except load.LoadError as e:
                    failed.add(key)
                    self.notes.append(f"{key}: POST: {e}")
                    log(f"{key:9} POST: FAILED: {e}")
                    continue
                if kept:
                    runs.setdefault((key, connections), []).append(result)

        if z.warmup_seconds:  # connections, TLS sessions, caches
            each(8, z.warmup_seconds, kept=False)
        for round_ in range(z.post_rounds):
            for c in (1, 32):
                each(c, z.post_seconds)
            log(f"POST round {round_ + 1} of {z.post_rounds} done")
        for (key, c), done in runs.items():
            if key in failed:
                continue
            mid = sorted(done, key=lambda run: run.rps)[len(done) // 2]
            cpu = sorted(r.cpu_us for r in done if r.cpu_us is not None)
            self.results[key] |= {
                f"post{c}_rps": mid.rps,
                f"post{c}_p50": mid.p50_ms,
                f"post{c}_p99": mid.p99_ms,
                f"post{c}_cpu": cpu[len(cpu) // 2] if cpu else None,
            }
            log(f"{key:9} POST c{c}: {mid.rps:.0f} req/s, median of {len(done)}")

    def sse(self, target: Target) -> dict[str, float | None]:
        z = self.s.sizes
        events, interval = z.sse_events, z.sse_interval_ms
        load.sse_stream(target, self.ctx, 10, interval, kept_alive=False)  # process warm-up
        new = load.sse_stream(target, self.ctx, events, interval, kept_alive=False)
        r = load.sse_stream(target, self.ctx, events, interval, kept_alive=True)
        delays = sorted(r.delays_ms)
        return {
            "sse_ttfb": new.ttfb_ms,
            "sse_ttfb_kept": r.ttfb_ms,
            "sse_p50": delays[len(delays) // 2],
            "sse_p99": delays[min(len(delays) - 1, int(len(delays) * 0.99))],
        }

    def streams(self, target: Target) -> dict[str, float | None]:
        z = self.s.sizes
        ttfb = self.results[target.key].get("sse_ttfb")
        if ttfb is not None and ttfb > z.sse_events * z.sse_interval_ms / 2:
            raise load.LoadError("it buffers SSE (first event only at the end): none can be held")
        r = load.open_streams(
            target, self.ctx, z.open_streams, z.open_hold_seconds, z.open_interval_ms
        )
        return {"streams_kib": r.rss_per_stream_kib, "streams_held": 100 * r.held}

    def transfers(self, target: Target) -> dict[str, float | None]:
        """Best of `transfer_rounds` each way (one transfer is short); the largest RSS growth."""
        runs = [
            load.curl_transfer(target, self.s.tls.ca_cert, upload)
            for upload in (self.s.upload_file, None)
            for _ in range(self.s.sizes.transfer_rounds)
        ]
        half = len(runs) // 2
        growth = [r.rss_growth_kib for r in runs if r.rss_growth_kib is not None]
        return {
            "upload_mbs": max(r.mb_per_s for r in runs[:half]),
            "download_mbs": max(r.mb_per_s for r in runs[half:]),
            "transfer_rss_mib": max(growth) / 1024 if growth else None,
        }


def start_targets(s: Setting, wanted: list[str], notes: list[str]) -> dict[str, Target]:
    builders: dict[str, Callable[[Setting], Target]] = {**BUILDERS, CLUSTER: cluster_target}
    started: dict[str, Target] = {}
    for key in wanted:
        try:
            started[key] = builders[key](s)
        except (FileNotFoundError, StartError) as e:
            notes.append(f"{key}: not measured: {e}")
            log(f"{key}: NOT MEASURED: {e}")
    ready: dict[str, Target] = {}
    for key, target in started.items():
        try:
            for proc in target.procs:
                proc.wait_listening()
            ready[key] = target
        except StartError as e:
            notes.append(f"{key}: not measured: {e}")
            log(f"{key}: NOT MEASURED: {e}")
            target.stop()
    return ready


def machine() -> str:
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), model
        )
    except OSError:
        pass
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {python}"


def versions() -> str:
    def out(argv: list[str]) -> str:
        if not shutil.which(argv[0]):
            return "missing"
        done = subprocess.run(argv, capture_output=True, text=True)
        return (done.stdout + done.stderr).strip().splitlines()[0]

    import mitmproxy.version

    return (
        f"mitmproxy {mitmproxy.version.VERSION}; {out(['nginx', '-v'])}; "
        f"node {out(['node', '--version'])}; {out(['wrk', '--version'])}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run, under a minute")
    parser.add_argument(
        "--targets",
        default=",".join([*BUILDERS, CLUSTER]),
        help="comma-separated columns to measure (default: all)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        metavar="SECONDS",
        default=0,
        help="then profile keyrelay (everything on) under load with py-spy",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="POST rounds, interleaved over the targets; the median counts (default: 5, quick 1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    wanted = [t for t in args.targets.split(",") if t]
    if "direct" not in wanted:
        wanted.insert(0, "direct")  # every + row is relative to it

    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="keyrelay-bench-"))
    workdir.chmod(0o755)  # nginx workers may run as another user
    sizes = Sizes.of(args.quick)
    if args.rounds:
        sizes = dataclasses.replace(sizes, post_rounds=args.rounds)
    procs: list[Proc] = []
    targets: dict[str, Target] = {}
    notes: list[str] = []
    try:
        tls = make_tls(workdir)
        download, upload = make_payloads(workdir, sizes.transfer_bytes)
        upstream_port, plain_port, procs = start_upstream(workdir, tls, download)
        s = Setting(
            workdir,
            tls,
            sizes,
            upstream_port,
            PROVIDER_KEY,
            all_on.build(workdir, None),
            download,
            upload,
            plain_port,
        )
        targets = start_targets(s, wanted, notes)
        time.sleep(SETTLE_SECONDS)  # start-up work (imports, JIT) ends before measuring
        run = Run(s, targets)
        run.notes = notes
        # Open streams early: memory per stream is read against a process that has not yet
        # been through the big transfers (whose freed memory would hide the streams' cost).
        run.measure("SSE", run.sse)
        run.measure("open streams", run.streams)
        run.post()
        run.measure("transfers", run.transfers)
        if args.profile:
            from bench import profile

            for key in ("mitmdump", "mitm+tbl", "keyrelay", "kr+all"):
                if key in targets:
                    log(f"{key}: profiling for {args.profile:g}s under wrk -c32")
                    notes.append(profile.run(targets[key], args.profile))
        print(report(run, wanted, s, quick=args.quick))
    finally:
        for target in targets.values():
            target.stop()
        for proc in procs:
            proc.stop()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(run: Run, wanted: list[str], s: Setting, *, quick: bool) -> str:
    z = s.sizes
    lines = [
        "",
        f"keyrelay benchmark{' (--quick)' if quick else ''}: {machine()}",
        versions(),
        f"POST: wrk -t1, {z.post_seconds:g}s per run, median of {z.post_rounds} interleaved; "
        f"SSE: {z.sse_events} events, one per "
        f"{z.sse_interval_ms:g} ms; transfers: {z.transfer_bytes // MIB} MiB each way (curl); "
        f"open streams: {z.open_streams} x one event per {z.open_interval_ms:g} ms for "
        f"{z.open_hold_seconds:g}s",
        f"mitmdump: stock, no addon, stream_large_bodies={BARE_MITMDUMP_STREAM} (keyrelay's own "
        "threshold); mitm+tbl: the same with keyrelay's engine tuning (addon/dispatch.py, "
        "addon/fast_paths.py), the engine keyrelay runs on; mitm-st: no addon, "
        "stream_large_bodies=1 (streams every body); "
        f"every mitmdump runs with flow_detail=0 and PYTHONOPTIMIZE={PYTHONOPTIMIZE or '(unset)'}",
        f"kr+all: {', '.join(s.all_on.features)}; 2kr+lb: two kr+all behind nginx, one Redis",
        "",
        table.render(run.results, wanted),
        "",
        table.LEGEND,
    ]
    if run.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in run.notes)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
