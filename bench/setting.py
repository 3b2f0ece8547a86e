"""The shared ground of one benchmark run: work directory, test CA, upstream, sizes."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx
from bench.procs import Proc, free_port

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.tls import TlsMaterial, make_test_ca  # noqa: E402

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    post_seconds: float
    post_rounds: int  # interleaved over the targets; the median run counts
    warmup_seconds: float  # 0: none
    sse_events: int
    sse_interval_ms: float
    transfer_bytes: int
    open_streams: int
    open_hold_seconds: float
    open_interval_ms: float  # one event per stream every this many ms
    transfer_rounds: int  # each way; the best counts

    @staticmethod
    def of(quick: bool) -> Sizes:
        if quick:
            return Sizes(1.0, 1, 0.0, 300, 1.0, 5 * MIB, 50, 1.0, 100.0, 2)
        return Sizes(3.0, 5, 2.0, 2000, 1.0, 50 * MIB, 500, 5.0, 100.0, 3)


@dataclass
class AllOn:
    """How keyrelay runs with every optional feature on (filled in by bench/all_on.py)."""

    rules: Path
    env: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)  # what is on, for the table's notes


@dataclass
class Setting:
    workdir: Path
    tls: TlsMaterial
    sizes: Sizes
    upstream_port: int  # HTTPS, what every proxy forwards to
    provider_key: str
    all_on: AllOn
    download_file: Path
    upload_file: Path
    upstream_plain_port: int  # the same upstream on plain HTTP, for the direct column


def make_payloads(workdir: Path, size: int) -> tuple[Path, Path]:
    """A download served by nginx and a JSON upload body (fal's proxy accepts only JSON)."""
    download = workdir / "download.bin"
    with download.open("wb") as f:
        f.truncate(size)
    upload = workdir / "upload.json"
    prefix, suffix = b'{"data":"', b'"}'
    upload.write_bytes(prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix)
    return download, upload


def make_tls(workdir: Path) -> TlsMaterial:
    return make_test_ca(workdir / "ca", extra_names=("127.0.0.1",))


def start_upstream(workdir: Path, tls: TlsMaterial, download: Path) -> tuple[int, int, list[Proc]]:
    """nginx (TLS, fixed JSON, static download) in front of the Python SSE/upload server.
    Returns its TLS port, its plain HTTP port, and the processes."""
    sse_port, port, plain_port = free_port(), free_port(), free_port()
    sse = Proc(
        "sse-server",
        [sys.executable, "-m", "bench.sse_server", str(sse_port)],
        workdir / "sse-server.log",
        port=sse_port,
        cwd=REPO,
    )
    conf = nginx.upstream_conf(
        workdir / "nginx-upstream",
        port,
        plain_port,
        tls.server_chain,
        tls.server_key,
        sse_port,
        download,
    )
    front = nginx.start("nginx-upstream", workdir, port, conf)
    for proc in (sse, front):
        proc.wait_listening()
    return port, plain_port, [sse, front]
