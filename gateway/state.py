"""What every request handler reaches through the app: the clients and helpers the lifespan opened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import psycopg_pool
from redis.asyncio import Redis
from starlette.requests import Request

from gateway.auth import Auth
from gateway.fanout import Fanout
from gateway.metrics import Metrics
from gateway.stream_slots import StreamSlots

PING_INTERVAL_S = 15.0
SESSION_READS = 8  # whole sessions read at once by one gateway process


@dataclass(slots=True)
class _Read:
    done: anyio.Event
    ok: bool = False  # the read answered (None too: a session not live, for the live reads)
    result: dict[str, Any] | None = None


def _copy(result: dict[str, Any] | None) -> dict[str, Any] | None:
    return dict(result) if result is not None else None


class SessionReads:
    """Whole-session reads (snapshots, `GET /sessions/{id}`): one at a time per session, `limit` at a time in all, and
    each shared by every reader of its session that came before it started.

    A read holds the whole session in memory: its bytes as Redis answers them, then the object built from them, which
    a stream keeps while it is open. Was: each client read its own copy, all at once, so a reload storm of 50 clients
    on an 8.6 MB session held 1.8 GB (and 1.2 GB after they closed). Now the clients that come while a session is
    being read share its next read. Each sees a state read after it came (a stream subscribes before it reads: what it
    is sent next follows what it was read) and gets its own copy of the object's top level (a stream sets `seq`).
    A read that fails is not shared: each of its readers then reads on its own.
    """

    def __init__(self, limit: int = SESSION_READS) -> None:
        self._turns = anyio.Semaphore(limit)
        self._waiting: dict[str, _Read] = {}  # the next read of a session, not started yet: joined by who comes
        self._running: dict[str, _Read] = {}  # the read of a session under way

    async def read(self, key: str, read: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        while True:
            waiting = self._waiting.get(key)
            if waiting is None:
                return await self._lead(key, read)
            await waiting.done.wait()
            if waiting.ok:
                return _copy(waiting.result)

    async def _lead(self, key: str, read: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        mine = self._waiting[key] = _Read(anyio.Event())
        try:
            while (running := self._running.get(key)) is not None:
                await running.done.wait()
            async with self._turns:
                del self._waiting[key]  # started: who comes now must read what is written from now on
                self._running[key] = mine
                result = mine.result = await read()
                mine.ok = True
        finally:
            for reads in (self._waiting, self._running):
                if reads.get(key) is mine:
                    del reads[key]
            mine.done.set()
        return _copy(result)


@dataclass(slots=True)
class GatewayState:
    redis: Redis
    pool: psycopg_pool.AsyncConnectionPool
    fanout: Fanout
    auth: Auth
    metrics: Metrics
    slots: StreamSlots
    ping_interval_s: float = PING_INTERVAL_S
    max_response_bytes: int = 4_194_304
    closing: anyio.Event | None = None
    reads: SessionReads = field(default_factory=SessionReads)  # live sessions, from Redis
    archive_reads: SessionReads = field(default_factory=SessionReads)  # apart: a slow PostgreSQL holds only these

    @classmethod
    def of(cls, request: Request) -> GatewayState:
        state = request.app.state.gateway
        assert isinstance(state, GatewayState)
        return state
