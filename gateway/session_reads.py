"""Whole-session reads shared by the clients that ask at once, each read encoded once for all of them."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import anyio

from gateway.sse import escape_line_breaks
from shared.models import dumps_bytes

SESSION_READS = 8  # whole sessions read at once by one gateway process


class SessionRead:
    """A session as one read gave it, shared by every client of that read, so never changed (a read-only view): its
    JSON, and an event's data of it, are encoded once for all of them. Was: each client encoded its own copy, ~55 ms
    of the event loop per 9 MB session and client (~140 ms with many U+2028 in it) for a snapshot, and as much for a
    `GET` or the `complete` of a long session: a reload storm of 50 clients blocked every stream for seconds."""

    __slots__ = ("_data", "_json", "_lock", "session")

    def __init__(self, session: Mapping[str, Any]) -> None:
        self.session: Mapping[str, Any] = MappingProxyType(dict(session))
        self._json: bytes | None = None
        self._data: dict[int | None, bytes] = {}
        self._lock = threading.Lock()  # `GET` encodes in a worker thread, streams on the event loop

    def json(self) -> bytes:
        with self._lock:
            if self._json is None:
                self._json = dumps_bytes(dict(self.session))
            return self._json

    def event_data(self, seq: int | None = None) -> bytes:
        """The session as an event's data; `seq` replaces its own (a `complete` carries the seq published)."""
        if seq == self.session.get("seq"):
            seq = None  # its own: the JSON already encoded
        if seq not in self._data:
            whole = self.json() if seq is None else dumps_bytes({**self.session, "seq": seq})
            self._data[seq] = escape_line_breaks(whole)
        return self._data[seq]


@dataclass(slots=True)
class _Read:
    done: anyio.Event
    ok: bool = False  # the read answered (None too: a session not live, for the live reads)
    result: SessionRead | None = None


class SessionReads:
    """Whole-session reads (snapshots, `GET /sessions/{id}`): one at a time per session, `limit` at a time in all, and
    each shared by every reader of its session that came before it started.

    A read holds the whole session in memory: its bytes as Redis answers them, then the object built from them, which
    a stream keeps while it is open. Was: each client read its own copy, all at once, so a reload storm of 50 clients
    on an 8.6 MB session held 1.8 GB (and 1.2 GB after they closed). Now the clients that come while a session is
    being read share its next read, one SessionRead. Each sees a state read after it came (a stream subscribes before
    it reads: what it is sent next follows what it was read). A read that fails is not shared: each of its readers
    then reads on its own.
    """

    def __init__(self, limit: int = SESSION_READS) -> None:
        self._turns = anyio.Semaphore(limit)
        self._waiting: dict[str, _Read] = {}  # the next read of a session, not started yet: joined by who comes
        self._running: dict[str, _Read] = {}  # the read of a session under way

    async def read(self, key: str, read: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> SessionRead | None:
        while True:
            waiting = self._waiting.get(key)
            if waiting is None:
                return await self._lead(key, read)
            await waiting.done.wait()
            if waiting.ok:
                return waiting.result

    async def _lead(self, key: str, read: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> SessionRead | None:
        mine = self._waiting[key] = _Read(anyio.Event())
        try:
            while (running := self._running.get(key)) is not None:
                await running.done.wait()
            async with self._turns:
                del self._waiting[key]  # started: who comes now must read what is written from now on
                self._running[key] = mine
                found = await read()
                mine.result = SessionRead(found) if found is not None else None
                mine.ok = True
        finally:
            for reads in (self._waiting, self._running):
                if reads.get(key) is mine:
                    del reads[key]
            mine.done.set()
        return mine.result
