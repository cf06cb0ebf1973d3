"""A stateless stand-in for OpenCode that can answer thousands of polls a second (aiohttp, its own process).

    python -m tests.perf.load_opencode --port N [--messages 30] [--change-ms 0]

Every session id has the same shape of transcript (captured OpenCode shapes: user text, assistant steps with
step-start, tool and text parts), `--messages` long and never finished. With `--change-ms` > 0 each session
known to it gains a part every that many ms, stamped with `"t": <time_ns>` in its text, and the change is
also sent on `GET /event` — the P1 latency benchmark measures from that stamp to an SSE client.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

import uvloop
from aiohttp import web


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
    def __init__(self, messages: int, change_ms: int) -> None:
        self.messages = messages
        self.change_ms = change_ms
        self.bodies: dict[str, bytes] = {}
        self.tails: dict[tuple[str, int], bytes] = {}
        self.tail_of: dict[tuple[str, int], bytes] = {}
        self.extra: dict[str, list[dict[str, Any]]] = {}
        self.listeners: list[asyncio.Queue[bytes]] = []
        self.requests = 0
        self.last_get: dict[str, float] = {}  # per session: when its list was last fetched
        self.gaps_ms: list[float] = []  # the time between two fetches of one session's list (GET /__load/gaps)

    def body(self, session_id: str) -> bytes:
        if session_id not in self.bodies:
            self.bodies[session_id] = self._render(session_id)
        return self.bodies[session_id]

    def _render(self, session_id: str) -> bytes:
        messages = transcript(session_id, self.messages)
        messages[-1]["parts"].extend(self.extra.get(session_id, []))
        return json.dumps(messages).encode()

    async def messages_handler(self, request: web.Request) -> web.Response:
        """`?limit=N` answers the newest N messages, as OpenCode does."""
        self.requests += 1
        session_id = request.match_info["sid"]
        now = time.monotonic()
        if (previous := self.last_get.get(session_id)) is not None:
            self.gaps_ms.append((now - previous) * 1000)
        self.last_get[session_id] = now
        limit = request.query.get("limit")
        if limit is None:
            return web.Response(body=self.body(session_id), content_type="application/json")
        key = (session_id, int(limit))
        if key not in self.tails or self.tail_of.get(key) is not self.bodies.get(session_id):
            self.body(session_id)
            self.tails[key] = json.dumps(json.loads(self.bodies[session_id])[-int(limit) :]).encode()
            self.tail_of[key] = self.bodies[session_id]
        return web.Response(body=self.tails[key], content_type="application/json")

    async def status_handler(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({})

    async def events_handler(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.listeners.append(queue)
        await response.write(b'data: {"id":"evt_0","type":"server.connected","properties":{}}\n\n')
        try:
            while True:
                try:
                    line = await asyncio.wait_for(queue.get(), 10)
                except TimeoutError:
                    line = b'data: {"id":"evt_1","type":"server.heartbeat","properties":{}}\n\n'
                await response.write(line)
        finally:
            self.listeners.remove(queue)

    async def change_loop(self) -> None:
        """Each known session gains a stamped part, one session after another, spread over change_ms."""
        while True:
            sessions = list(self.bodies)
            if not sessions:
                await asyncio.sleep(0.05)
                continue
            gap = self.change_ms / 1000 / len(sessions)
            for session_id in sessions:
                count = len(self.extra.setdefault(session_id, []))
                mid = f"msg_{self.messages - 1:012x}AAAAAAAAAAAAAA"
                part = {
                    "id": f"prt_{self.messages - 1:012x}Z{count:013d}",
                    "sessionID": session_id,
                    "messageID": mid,
                    "type": "text",
                    "text": json.dumps({"t": time.time_ns()}),
                    "time": {"start": 1, "end": 2},
                }
                self.extra[session_id].append(part)
                self.bodies[session_id] = self._render(session_id)
                event = {
                    "id": "evt_x",
                    "type": "message.part.updated",
                    "properties": {"sessionID": session_id, "part": part, "time": 1},
                }
                line = b"data: " + json.dumps(event).encode() + b"\n\n"
                for queue in self.listeners:
                    queue.put_nowait(line)
                await asyncio.sleep(gap)

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests})

    async def gaps_handler(self, request: web.Request) -> web.Response:
        """The list-fetch gaps since the last call (the cadence as OpenCode sees it), then forgets them."""
        gaps, self.gaps_ms = self.gaps_ms, []
        return web.json_response({"gaps_ms": gaps})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--change-ms", type=int, default=0)
    args = parser.parse_args()
    load = LoadOpenCode(args.messages, args.change_ms)
    app = web.Application()
    app.router.add_get("/session/status", load.status_handler)
    app.router.add_get("/session/{sid}/message", load.messages_handler)
    app.router.add_get("/event", load.events_handler)
    app.router.add_get("/__load/stats", load.stats_handler)
    app.router.add_get("/__load/gaps", load.gaps_handler)

    async def start_changes(app: web.Application) -> None:
        if args.change_ms > 0:
            app["changes"] = asyncio.create_task(load.change_loop())

    app.on_startup.append(start_changes)
    # OpenCode (Bun) has no Python collector: the stand-in's own pauses must not read as the poller's lag
    gc.set_threshold(100_000, 50, 1_000)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
