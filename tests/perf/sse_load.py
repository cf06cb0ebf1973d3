"""Load generator: N raw SSE connections to the gateway (its own process), measuring publish→receipt latency.

Each published event carries `"t":<time_ns>` set just before PUBLISH; the latency is receipt time minus that.
Output: one JSON line on stdout when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

from tests.perf.procstat import raise_fd_limit

STAMP = re.compile(rb'\\?"t\\?":\s?(\d+)')  # {"t":N} in an event, or {\"t\": N} inside a part's text


async def client(
    host: str, port: int, path: str, ready: list[int], latencies: list[float], stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    buffer = b""
    seen_snapshot = False
    try:
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                break
            now = time.time_ns()
            buffer += chunk
            if not seen_snapshot and b"event: snapshot" in buffer:
                seen_snapshot = True
                ready[0] += 1
            *records, buffer = buffer.split(b"\n\n")
            for record in records:
                if b"event: update" in record:  # a snapshot repeats older stamps: only changes count
                    latencies.extend((now - int(m.group(1))) / 1e6 for m in STAMP.finditer(record))
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", required=True, help="comma-separated session ids")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds to listen once all are connected")
    parser.add_argument("--connect-rate", type=int, default=500, help="new connections per second")
    args = parser.parse_args()
    raise_fd_limit()
    sessions = args.sessions.split(",")
    ready = [0]
    latencies: list[float] = []
    stop = asyncio.Event()
    tasks = []
    for i in range(args.clients):
        path = f"/sessions/{sessions[i % len(sessions)]}/stream"
        tasks.append(asyncio.create_task(client(args.host, args.port, path, ready, latencies, stop)))
        if i % 100 == 99:
            await asyncio.sleep(100 / args.connect_rate)
    deadline = time.monotonic() + 120
    while ready[0] < args.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failed:
        print(f"{len(failed)} connections failed, e.g. {failed[0]!r}", file=sys.stderr)
    print(json.dumps({"event": "connected", "clients": ready[0]}), flush=True)
    sys.stdin.readline()  # the orchestrator says when publishing starts
    latencies.clear()
    await asyncio.sleep(args.duration)
    stop.set()
    print(json.dumps({"event": "done", "clients": ready[0], "latencies_ms": latencies}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
