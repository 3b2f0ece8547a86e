"""The load generators: wrk for small POSTs, curl for big transfers, asyncio for SSE.

Each function measures one workload against one target and returns plain numbers; nothing here
knows about the table.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.procs import cpu_seconds, reset_peak, status_kib
from bench.targets import Target

LUA = Path(__file__).with_name("post.lua")
_WRK_LINE = re.compile(r"BENCH (.*)")
_EVENT_TIME = re.compile(rb'"t":(\d+)')


class LoadError(RuntimeError):
    pass


# -- small JSON POSTs ---------------------------------------------------------------------


@dataclass(frozen=True)
class PostResult:
    rps: float
    p50_ms: float
    p99_ms: float
    # CPU the proxy's processes used per request. Unlike req/s it hardly depends on what else
    # the two cores were doing (wrk, the upstream), so it is the steadier figure to compare.
    cpu_us: float | None


def wrk_post(target: Target, connections: int, seconds: float) -> PostResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise LoadError("wrk is not installed (Debian: apt-get install wrk)")
    headers = target.request_headers("chat")
    if target.tls_name:
        headers["Host"] = target.tls_name
    env = {**os.environ, "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}
    url = target.url_base + target.path("chat")
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
    ]
    pids = target.memory_pids()
    cpu_before = _cpu(pids)
    try:
        done = subprocess.run([*argv, url], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise LoadError(f"wrk against {url} did not finish in 120s") from None
    cpu = _cpu(pids) - cpu_before
    match = _WRK_LINE.search(done.stdout)
    if done.returncode or not match:
        raise LoadError(f"wrk failed against {url}: {done.stdout}{done.stderr}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    if fields["requests"] == 0 or fields["errors"] or fields["status_errors"]:
        raise LoadError(f"wrk against {target.key}: {match.group(0)}")
    return PostResult(
        fields["requests"] / (fields["duration_us"] / 1e6),
        fields["p50_us"] / 1000,
        fields["p99_us"] / 1000,
        1e6 * cpu / fields["requests"] if pids else None,
    )


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


# -- big transfers ------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult:
    mb_per_s: float
    rss_growth_kib: int | None  # peak RSS during the transfer (VmHWM) minus RSS before it


def curl_transfer(target: Target, ca: Path, upload: Path | None) -> TransferResult:
    """One download (upload None) or upload through the target, and the proxy's RSS growth."""
    endpoint = "upload" if upload else "download"
    argv = ["curl", "-sS", "--fail-with-body", "-o", "-" if upload else "/dev/null"]
    argv += ["-w", "\n%{http_code} %{size_download} %{size_upload} %{time_total}"]
    for name, value in target.request_headers(endpoint).items():
        argv += ["-H", f"{name}: {value}"]
    host = target.tls_name or target.host
    if target.tls_name:
        argv += ["--cacert", str(ca), "--resolve", f"{host}:{target.port}:{target.host}"]
    if upload:
        argv += ["-H", "content-type: application/json", "-H", "Expect:"]
        argv += ["--data-binary", f"@{upload}"]
    scheme = "https" if target.tls_name else "http"
    argv.append(f"{scheme}://{host}:{target.port}{target.path(endpoint)}")
    pids = target.memory_pids()
    for pid in pids:
        reset_peak(pid)
    before = sum(status_kib(pid, "VmRSS") for pid in pids)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise LoadError(f"{endpoint} via {target.key}: no answer in 120s") from None
    body, _, stats = done.stdout.rpartition("\n")
    if done.returncode:
        raise LoadError(f"curl {endpoint} via {target.key}: {done.stderr.strip()} {stats}")
    _, downloaded, _, seconds = stats.split()
    size = upload.stat().st_size if upload else int(downloaded)
    if upload and json.loads(body).get("received") != size:
        raise LoadError(f"upload via {target.key}: upstream got {body!r}, sent {size}")
    # Summed peaks of several processes (a cluster) may not be simultaneous: an upper bound.
    peak = sum(status_kib(pid, "VmHWM") for pid in pids)
    return TransferResult(size / float(seconds) / 1e6, peak - before if pids else None)


# -- Server-Sent Events ---------------------------------------------------------------------


async def _connect(
    target: Target, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        target.host,
        target.port,
        ssl=ctx if target.tls_name else None,
        server_hostname=target.tls_name,
        limit=1 << 20,
    )


async def _request(
    target: Target, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, int]:
    """Send a GET on an open connection; the response head (lower-cased) and when it was sent."""
    host = target.tls_name or f"{target.host}:{target.port}"
    lines = [f"GET {target.path(endpoint)} HTTP/1.1", f"Host: {host}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in target.request_headers(endpoint).items()]
    sent = time.monotonic_ns()  # the client's own connection (and TLS) is already up
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise LoadError(f"SSE via {target.key}: {head.decode(errors='replace')[:300]}")
    return head.lower(), sent


async def _open(
    target: Target, endpoint: str, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await _connect(target, ctx)
    head, _ = await _request(target, endpoint, reader, writer)
    return reader, writer, head


async def _body(reader: asyncio.StreamReader, head: bytes) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive: decoded chunks, or reads up to content-length."""
    if b"transfer-encoding: chunked" in head:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    length = re.search(rb"content-length: *(\d+)", head)
    remaining = int(length.group(1)) if length else -1
    while remaining:
        data = await reader.read(1 << 16 if remaining < 0 else min(1 << 16, remaining))
        if not data:
            return
        remaining -= len(data)
        yield data


def _event_times(data: bytes) -> list[int]:
    return [int(t) for t in _EVENT_TIME.findall(data)]


@dataclass(frozen=True)
class SseResult:
    ttfb_ms: float  # request sent on an open connection -> first event read
    delays_ms: list[float]  # per event: read time - the upstream's send time


async def _sse_once(
    target: Target, ctx: ssl.SSLContext, events: int, interval_ms: float, kept_alive: bool
) -> SseResult:
    """One stream on a new connection, or (kept_alive) after a first request on it: a proxy
    that keeps its upstream connection then has it ready, as for a browser's second call."""
    reader, writer = await _connect(target, ctx)
    delays: list[float] = []
    first: int | None = None
    pending = b""
    try:
        if kept_alive:
            head, _ = await _request(target, "sse?n=1&interval_ms=0", reader, writer)
            async for _ in _body(reader, head):
                pass
        endpoint = f"sse?n={events}&interval_ms={interval_ms}"
        head, start = await _request(target, endpoint, reader, writer)
        async for data in _body(reader, head):
            now = time.monotonic_ns()
            complete, _, pending = (pending + data).rpartition(b"\n\n")
            sent = _event_times(complete)
            if sent and first is None:
                first = now
            delays += [(now - t) / 1e6 for t in sent]
    finally:
        writer.close()
    if len(delays) != events or first is None:
        raise LoadError(f"SSE via {target.key}: {len(delays)} of {events} events")
    return SseResult((first - start) / 1e6, delays)


def sse_stream(
    target: Target, ctx: ssl.SSLContext, events: int, interval_ms: float, *, kept_alive: bool
) -> SseResult:
    return asyncio.run(_sse_once(target, ctx, events, interval_ms, kept_alive))


@dataclass(frozen=True)
class OpenStreamsResult:
    rss_per_stream_kib: float | None
    held: float  # events received / events the upstream was asked to send


async def _hold_streams(
    target: Target, ctx: ssl.SSLContext, streams: int, hold_s: float, interval_ms: float
) -> OpenStreamsResult:
    pids = target.memory_pids()
    before = sum(status_kib(p, "VmRSS") for p in pids)
    counted = [0]
    started = asyncio.Event()
    opened = [0]

    async def one() -> None:
        # Finite, so a proxy that keeps reading upstream after its client left stops some time.
        events = int((hold_s + 30) * 1000 / interval_ms)
        endpoint = f"sse?n={events}&interval_ms={interval_ms}"
        reader, writer, head = await _open(target, endpoint, ctx)
        try:
            first = True
            async for chunk in _body(reader, head):
                if first:
                    first = False
                    opened[0] += 1
                    if opened[0] == streams:
                        started.set()
                counted[0] += chunk.count(b"data: ")
        finally:
            writer.close()

    tasks: list[asyncio.Task[None]] = []
    try:
        for batch in range(0, streams, 50):  # gently: listen backlogs are finite
            tasks += [asyncio.create_task(one()) for _ in range(min(50, streams - batch))]
            await asyncio.sleep(0.02)
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([waiter, *tasks], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            failed = [t.exception() for t in tasks if t.done() and t.exception()]
            raise LoadError(f"{target.key}: {opened[0]} of {streams} streams opened {failed[:1]}")
        await asyncio.sleep(interval_ms / 1000 * 2)
        counted[0] = 0
        t0 = time.monotonic()
        await asyncio.sleep(hold_s)
        received, elapsed = counted[0], time.monotonic() - t0
        during = sum(status_kib(p, "VmRSS") for p in pids)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = streams * elapsed / (interval_ms / 1000)
    per_stream = (during - before) / streams if pids else None
    return OpenStreamsResult(per_stream, received / expected)


def open_streams(
    target: Target, ctx: ssl.SSLContext, streams: int, hold_s: float, interval_ms: float
) -> OpenStreamsResult:
    return asyncio.run(_hold_streams(target, ctx, streams, hold_s, interval_ms))
