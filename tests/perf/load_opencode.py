"""A stand-in for OpenCode that can answer thousands of polls a second (its own process).

    python -m tests.perf.load_opencode --port N [--messages 30] [--change-ms 0]

Every session id has the same shape of transcript (captured OpenCode shapes: user text, assistant steps with
step-start, tool and text parts), `--messages` long and never finished. With `--change-ms` > 0 each session
known to it gains a part every that many ms, stamped with `"t": <time_ns>` in its text, and the change is
also sent on `GET /event` — the P1 latency benchmark measures from that stamp to an SSE client.

It shares the benchmark's machine with the poller it loads, so it is built to cost little: bodies are rendered once
per change and served as bytes (compact JSON, as the real server writes it: a poller finds its settled heads in
them), over a bare asyncio protocol parsed by httptools (aiohttp's server cost 0.72 cores
at 4,000 sessions with events on, as much as the poller it measured). `GET /permission` and `GET /question` answer
`[]`, as an OpenCode with nothing waiting does; any other path is a 404.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop


def compact(value: Any) -> bytes:
    """JSON as OpenCode writes it (JSON.stringify): no spaces, keys in their order."""
    return json.dumps(value, separators=(",", ":")).encode()


def transcript(session_id: str, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(count):
        mid = f"msg_{i:012x}AAAAAAAAAAAAAA"
        if i % 2 == 0:
            info = {
                "id": mid,
                "sessionID": session_id,
                "role": "user",
                "time": {"created": 1_700_000_000_000 + i},
                "summary": {"diffs": []},
                "agent": "build",
                "model": {"providerID": "fake", "modelID": "m"},
            }
            parts = [
                {
                    "id": f"prt_{i:012x}A0AAAAAAAAAAAA",
                    "sessionID": session_id,
                    "messageID": mid,
                    "type": "text",
                    "text": f"question {i}: what does this code do and why is it slow?",
                }
            ]
        else:
            last = i == count - 1
            info = {
                "id": mid,
                "sessionID": session_id,
                "role": "assistant",
                "parentID": f"msg_{i - 1:012x}",
                "time": {"created": 1_700_000_000_000 + i, **({} if last else {"completed": 1_700_000_000_500})},
                "modelID": "m",
                "providerID": "fake",
                "mode": "build",
                "agent": "build",
                "path": {"cwd": "/work", "root": "/work"},
                "cost": 0,
                "tokens": {"input": 100, "output": 20, "reasoning": 0, "cache": {"read": 0, "write": 0}},
                **({} if last else {"finish": "stop"}),
            }
            parts = [
                {
                    "id": f"prt_{i:012x}A0AAAAAAAAAAAA",
                    "sessionID": session_id,
                    "messageID": mid,
                    "type": "step-start",
                    "snapshot": "e6cb2f61291ddd0ab88dd33fcb1bccd3ccc32c9a",
                },
                {
                    "id": f"prt_{i:012x}A1AAAAAAAAAAAA",
                    "sessionID": session_id,
                    "messageID": mid,
                    "type": "tool",
                    "callID": f"call_{i}",
                    "tool": "bash",
                    "state": {
                        "status": "completed",
                        "input": {"command": "ls -la"},
                        "output": "total 0\n" * 8,
                        "title": "ls -la",
                        "metadata": {"exit": 0},
                        "time": {"start": 1, "end": 2},
                    },
                },
                {
                    "id": f"prt_{i:012x}A2AAAAAAAAAAAA",
                    "sessionID": session_id,
                    "messageID": mid,
                    "type": "text",
                    "text": "The answer, in a few sentences of realistic length. " * 4,
                    "time": {"start": 1, "end": 2},
                },
            ]
        messages.append({"info": info, "parts": parts})
    return messages


class LoadOpenCode:
    """The transcripts and their changes; rendered once per change, served as prebuilt bytes."""

    def __init__(self, messages: int, change_ms: int) -> None:
        self.messages = messages
        self.change_ms = change_ms
        self.segments: dict[str, list[bytes]] = {}  # per session: each message's JSON
        self.last: dict[str, dict[str, Any]] = {}  # per session: its last message, which the changes grow
        self.bodies: dict[str, dict[int, bytes]] = {}  # per session, per limit (0: none): the body last served
        self.listeners: list[asyncio.Transport] = []
        self.requests = 0
        self.last_get: dict[str, float] = {}  # per session: when its list was last fetched
        self.gaps_ms: list[float] = []  # the time between two fetches of one session's list (GET /__load/gaps)
        self.whole = 0  # ...and how many of those fetches took the whole list (no `?limit=`)

    def messages_body(self, session_id: str, limit: int) -> bytes:
        """The list, or its newest `limit` messages as OpenCode's `?limit=N` answers."""
        now = time.monotonic()
        if (previous := self.last_get.get(session_id)) is not None:
            self.gaps_ms.append((now - previous) * 1000)
        self.last_get[session_id] = now
        self.whole += not limit
        served = self.bodies.setdefault(session_id, {})
        if (body := served.get(limit)) is not None:
            return body
        if (segments := self.segments.get(session_id)) is None:
            messages = transcript(session_id, self.messages)
            self.last[session_id] = messages[-1]
            segments = self.segments[session_id] = [compact(m) for m in messages]
        body = b"[" + b",".join(segments[-limit:] if limit else segments) + b"]"
        served[limit] = body
        return body

    def change(self, session_id: str) -> bytes:
        """The session's last message gains a part stamped with the time; returns its event line."""
        last = self.last[session_id]
        part = {
            "id": f"prt_{self.messages - 1:012x}Z{len(last['parts']):013d}",
            "sessionID": session_id,
            "messageID": last["info"]["id"],
            "type": "text",
            "text": json.dumps({"t": time.time_ns()}),
            "time": {"start": 1, "end": 2},
        }
        last["parts"].append(part)
        self.segments[session_id][-1] = compact(last)
        self.bodies[session_id] = {}
        event = {
            "id": "evt_x",
            "type": "message.part.updated",
            "properties": {"sessionID": session_id, "part": part, "time": 1},
        }
        return b"data: " + compact(event) + b"\n\n"

    def broadcast(self, line: bytes) -> None:
        chunk = http_chunk(line)
        for transport in self.listeners:
            transport.write(chunk)

    async def change_loop(self) -> None:
        """Each known session gains a stamped part, one session after another, spread over change_ms."""
        while True:
            sessions = list(self.segments)
            if not sessions:
                await asyncio.sleep(0.05)
                continue
            gap = self.change_ms / 1000 / len(sessions)
            started = time.monotonic()
            for i, session_id in enumerate(sessions):
                self.broadcast(self.change(session_id))
                await asyncio.sleep(max(0.0, started + (i + 1) * gap - time.monotonic()))

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.broadcast(b'data: {"id":"evt_1","type":"server.heartbeat","properties":{}}\n\n')


def http_chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 body (how `/event` streams)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def response(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


class Connection(asyncio.Protocol):
    """One client connection: keep-alive requests answered in order as they complete; `/event` streams chunks."""

    def __init__(self, load: LoadOpenCode) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.load.listeners:
            self.load.listeners.remove(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        url, self.url = self.url, b""
        split = urlsplit(url.decode())
        path, query = split.path, parse_qs(split.query)
        segments = path.split("/")
        if path == "/event":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            self.load.listeners.append(self.transport)
            line = b'data: {"id":"evt_0","type":"server.connected","properties":{}}\n\n'
            self.transport.write(http_chunk(line))
            return
        self.load.requests += 1
        if len(segments) == 4 and segments[1] == "session" and segments[3] == "message":
            limit = int(query.get("limit", ["0"])[0])
            reply = response(b"200 OK", self.load.messages_body(segments[2], limit))
        elif path == "/session/status":
            reply = response(b"200 OK", b"{}")
        elif path in ("/permission", "/question"):
            reply = response(b"200 OK", b"[]")
        elif path == "/__load/stats":
            reply = response(b"200 OK", json.dumps({"requests": self.load.requests}).encode())
        elif path == "/__load/gaps":
            # the list-fetch gaps since the last call (the cadence as OpenCode sees it), then forgets them; with
            # `?forget` only their count: encoding a warm-up's ~300,000 gaps stalled this server for ~0.3 s, and
            # every poll and event with it, just as the measurement began
            gaps, self.load.gaps_ms = self.load.gaps_ms, []
            whole, self.load.whole = self.load.whole, 0
            body = {"forgotten": len(gaps)} if "forget" in split.query.split("&") else {"gaps_ms": gaps, "whole": whole}
            reply = response(b"200 OK", json.dumps(body).encode())
        else:
            reply = response(b"404 Not Found", b'{"name":"NotFoundError","data":{"message":"not found"}}')
        self.transport.write(reply)


async def serve(port: int, messages: int, change_ms: int) -> None:
    load = LoadOpenCode(messages, change_ms)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(load), "127.0.0.1", port, backlog=4096)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(load.heartbeat_loop())
        if change_ms > 0:
            tasks.create_task(load.change_loop())
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--change-ms", type=int, default=0)
    args = parser.parse_args()
    # OpenCode (Bun) has no Python collector: the stand-in's own pauses must not read as the poller's lag
    gc.set_threshold(100_000, 50, 1_000)
    uvloop.run(serve(args.port, args.messages, args.change_ms))


if __name__ == "__main__":
    main()
