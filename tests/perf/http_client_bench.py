"""CPU per GET of the poller's hot request, aiohttp against the lean keep-alive client, on one loopback server.

    python -m tests.perf.http_client_bench [--requests 20000] [--concurrency 1,8,64]

The server (uvicorn with httptools, in a child process so its CPU is not counted) answers every GET with the
same message tail the poller fetches (two messages, ~1.3 KB). This process's CPU time over N GETs, per GET:
aiohttp's ClientSession as OpenCodeClient used it for GETs before, `KeepAliveGets`, and
`OpenCodeClient.messages_if_changed` whole (query building, digest, error translation) on top of it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import uvloop

from shared.opencode.client import OpenCodeClient
from shared.opencode.keepalive import KeepAliveGets
from tests.perf.common import child

BODY = orjson.dumps(
    [
        {
            "info": {"id": f"msg_{i:026d}", "sessionID": "ses_bench", "role": role, "time": {"created": 1}},
            "parts": [{"id": f"prt_{i:026d}", "messageID": f"msg_{i:026d}", "type": "text", "text": "word " * 100}],
        }
        for i, role in enumerate(("user", "assistant"))
    ]
)
PATH = "/session/ses_bench/message"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def measure(name: str, one: Callable[[], Awaitable[object]], requests: int, concurrency: int) -> None:
    for _ in range(200):  # warm: connections open, caches filled
        await one()
    slots = asyncio.Semaphore(concurrency)

    async def worker() -> None:
        async with slots:
            await one()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(requests)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    per_get = cpu / requests * 1e6
    print(f"{name:<34} concurrency {concurrency:>3}: {per_get:6.1f} µs CPU per GET, {requests / wall:,.0f}/s")


async def run(url: str, requests: int, levels: list[int]) -> None:
    for concurrency in levels:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

            async def aiohttp_get() -> bytes:
                async with http.request("GET", url + PATH, params={"limit": "2"}) as resp:
                    return await resp.read()

            await measure("aiohttp ClientSession", aiohttp_get, requests, concurrency)
        gets = KeepAliveGets(url)
        await measure("KeepAliveGets", lambda gets=gets: gets.get(PATH + "?limit=2"), requests, concurrency)
        await gets.aclose()
        async with OpenCodeClient(url) as oc:
            await measure(
                "OpenCodeClient.messages_if_changed",
                lambda: oc.messages_if_changed("ses_bench", limit=2, digest=None),
                requests,
                concurrency,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child: serve BODY on this port
    args = parser.parse_args()
    if args.serve:
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.serve, log_level="warning", loop="uvloop", http="httptools")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    python = sys.version.split()[0]
    print(f"one loopback server, a {len(BODY)} B message tail per GET, {args.requests} GETs per row, Python {python}")
    with child("tests.perf.http_client_bench", "--serve", str(port), port=port):
        uvloop.run(run(f"http://127.0.0.1:{port}", args.requests, [int(v) for v in args.concurrency.split(",")]))


if __name__ == "__main__":
    main()
