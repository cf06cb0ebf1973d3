"""A front for the OpenCode simulator that misbehaves around permission requests and questions, as a hostile or
buggy OpenCode server might: it lists extra requests (any shape) in `GET /permission` / `GET /question`, and
answers the reply routes as a test says instead of passing them on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store import archive
from tests.fixtures import SIM_SPEED

LISTS = {"/permission": "permission", "/question": "question"}


class HostileAsks:
    """`extra[kind]`: requests listed besides the simulator's own; `reply_with`: (status, JSON body) given to every
    reply (None: the simulator answers); `sent`: each reply's path and body, as the poller sent it; `lists`: how
    many lists were read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.extra: dict[str, list[Any]] = {"permission": [], "question": []}
        self.reply_with: tuple[int, Any] | None = None
        self.sent: list[tuple[str, Any]] = []
        self.lists = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in LISTS:
            listed = await self._inner_json(scope, receive)
            self.lists += 1
            await _answer(send, 200, [*listed, *self.extra[LISTS[path]]])
        elif method == "POST" and path.split("/")[1] in LISTS.values() and self.reply_with is not None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.sent.append((path, json.loads(body or b"null")))
            await _answer(send, *self.reply_with)
        else:
            await self.app(scope, receive, send)

    async def _inner_json(self, scope: Scope, receive: Receive) -> list[Any]:
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        return list(json.loads(b"".join(chunks)))


async def _answer(send: Send, status: int, value: Any) -> None:
    body = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def hostile_simulator() -> Iterator[tuple[str, HostileAsks]]:
    """The simulator behind a HostileAsks front, served on a loopback port: (its URL, the front)."""
    front = HostileAsks(create_simulator(SIM_SPEED, retry_delays=(0.2, 0.2)))
    with serve_in_thread(front) as url:
        yield url, front


BAD_REQUEST = {"name": "BadRequest", "data": {"message": "Expected array of arrays of strings"}}  # a refused answer


@pytest.fixture
def hostile() -> Iterator[tuple[str, HostileAsks]]:
    with hostile_simulator() as served:
        yield served


@pytest.fixture
async def client(hostile: tuple[str, HostileAsks]) -> AsyncIterator[OpenCodeClient]:
    async with OpenCodeClient(hostile[0], timeout_s=5) as oc:
        yield oc


async def final(db: Any, sid: str) -> tuple[str, str | None] | None:
    """The archived (status, error), once the session ended."""
    row = await archive.fetch(db, sid)
    return (row.status, row.error_message) if row and not row.unfinished else None
