"""The benchmark's streaming upstream: Server-Sent Events and an upload sink, plain HTTP/1.1.

nginx terminates TLS in front of it (see upstream.py), so every target reaches it the same way.
Run as its own process: `python -m bench.sse_server PORT`.

  GET  /v1/sse?n=N&interval_ms=MS   N events (0: until the client leaves), one every MS ms;
                                    each carries the CLOCK_MONOTONIC time it was sent, in ns,
                                    so a client on this machine can compute each event's delay.
  POST /v1/upload                   reads the whole body, then answers {"received": bytes}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

READ_SIZE = 256 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await _one_request(reader, writer):
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    if url.path.endswith("/upload") and method in ("POST", "PUT"):
        received = await _drain_body(reader, headers)
        body = json.dumps({"received": received}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        return True
    if url.path.endswith("/sse"):
        await _drain_body(reader, headers)
        query = parse_qs(url.query)
        count = int(query.get("n", ["2000"])[0])
        interval = float(query.get("interval_ms", ["1"])[0]) / 1000
        await _stream_events(writer, count, interval)
        return True
    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
    await writer.drain()
    return True


async def _drain_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent here
                return total
            await reader.readexactly(size + 2)
            total += size
    remaining = int(headers.get("content-length", "0"))
    total = remaining
    while remaining:
        chunk = await reader.read(min(READ_SIZE, remaining))
        if not chunk:
            raise ConnectionError("upload cut short")
        remaining -= len(chunk)
    return total


async def _stream_events(writer: asyncio.StreamWriter, count: int, interval: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    start = time.monotonic()
    i = 0
    while count == 0 or i < count:
        # Paced against the start, so a late wake-up does not push every later event back.
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        event = b'data: {"i":%d,"t":%d}\n\n' % (i, time.monotonic_ns())
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        i += 1
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
