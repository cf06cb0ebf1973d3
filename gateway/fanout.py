"""Fanout: the process's one Redis pub/sub connection, shared by every SSE client.

A channel is subscribed when its first client arrives and unsubscribed when its last leaves. Each client
gets a bounded queue: a client too slow to keep up, or one that was connected while the Redis connection
dropped, is told it lost events (`LOST`) and must take a fresh snapshot — nothing is silently skipped; it reads it
(`Resync`) once `confirmed()` says the channel is subscribed again, or events published in between would be lost.
A client whose queued events outgrow its byte budget is told to end its stream (`DROPPED`): it resumes with
Last-Event-ID, and the memory it held is freed at once rather than when it reads again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
import redis.exceptions
import structlog
from psycopg_pool import PoolTimeout
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.metrics import Metrics
from gateway.sse import format_event
from shared.backoff import Backoff
from shared.errors import Unavailable
from shared.models import loads

log = structlog.get_logger(__name__)
T = TypeVar("T")

SUBSCRIBE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 1.0
KEEPALIVE_S = 10.0
PONG_TIMEOUT_S = 5.0
RECONNECT_BASE_S = 0.1
RECONNECT_CAP_S = 5.0
RESYNC_RETRY_BASE_S = 0.1
RESYNC_RETRY_CAP_S = 5.0
STORE_DOWN = (Unavailable, PoolTimeout)  # a read that may succeed once Redis or PostgreSQL answers again


class Signal:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


LOST: Final = Signal("LOST")  # events were dropped for this subscriber: resynchronise
CLOSED: Final = Signal("CLOSED")  # the gateway is shutting down: end the stream
DROPPED: Final = Signal("DROPPED")  # the client's queued bytes passed its budget: end the stream, it resumes


@dataclass(slots=True)
class Published:
    """One message from Redis, parsed once and framed once however many clients receive it."""

    raw: bytes
    body: dict[str, Any]
    _frames: dict[str, bytes] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return int(self.body.get("seq") or 0)

    @property
    def type(self) -> str:
        return str(self.body.get("type") or "")

    def frame(self, name: str) -> bytes:
        if name not in self._frames:
            self._frames[name] = format_event(name, self.raw, self.seq)
        return self._frames[name]


class Subscription:
    """One client's view of a channel: a queue bounded in events and in bytes, and a wake-up."""

    def __init__(self, channel: str, max_queued: int, max_bytes: int | None = None) -> None:
        self.channel = channel
        self._max_queued = max_queued
        self._max_bytes = max_bytes
        self._queue: deque[Published] = deque()
        self._queued_bytes = 0
        self._signal: Signal | None = None
        self._wakeup = anyio.Event()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def push(self, item: Published) -> None:
        if self._signal is DROPPED or self._signal is CLOSED:
            return  # the stream is ending: hold nothing more for it
        # The budget bounds the backlog, not one event: a single event larger than it still goes out.
        if self._queue and self._max_bytes is not None and self._queued_bytes + len(item.raw) > self._max_bytes:
            self.interrupt(DROPPED)
            return
        if len(self._queue) >= self._max_queued:
            self.interrupt(LOST)
            return
        self._queue.append(item)
        self._queued_bytes += len(item.raw)
        self._wakeup.set()

    def interrupt(self, signal: Signal) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        if self._signal is not CLOSED and self._signal is not DROPPED:
            self._signal = signal
        self._wakeup.set()

    async def get(self, timeout_s: float) -> Published | Signal | None:
        """The next item, a signal, or None when nothing came within timeout_s."""
        if not self._queue and self._signal is None:
            self._wakeup = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._wakeup.wait()
        if self._signal is not None:
            signal, self._signal = self._signal, None
            if signal is CLOSED or signal is DROPPED:
                self._signal = signal  # stays ended
            return signal
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._queued_bytes -= len(item.raw)
        return item


class Fanout:
    """Run `run()` in a task for the life of the process; `subscribe()` from request handlers."""

    def __init__(
        self,
        redis_url: str,
        *,
        max_queued: int = 1000,
        max_bytes: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._redis_url = redis_url
        self._max_queued = max_queued
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._subs: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, anyio.Event] = {}
        self._pubsub: PubSub | None = None
        self._client: Redis | None = None
        self._closed = False
        self.connections_opened = 0

    @property
    def channels(self) -> int:
        return len(self._subs)

    def confirmed(self, channel: str) -> bool:
        """Is the channel subscribed on the connection that is up? Only then does a snapshot read now miss nothing."""
        event = self._confirmed.get(channel)
        return event is not None and event.is_set()

    async def run(self) -> None:
        """Keep one pub/sub connection up. Any failure, expected (Redis went away) or not (a bug), ends in the
        same place: drop the connection, tell every client it lost events, reconnect with backoff, resubscribe."""
        backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        try:
            while not self._closed:
                connected_at = anyio.current_time()
                try:
                    await self._connect()
                    await self._read()
                except Exception as exc:
                    if anyio.current_time() - connected_at > RECONNECT_CAP_S:
                        backoff.reset()  # it had been up a while: this is a new outage
                    delay = round(backoff.failed(anyio.current_time()), 3)
                    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
                        log.warning("fanout_disconnected", error=str(exc), retry_in_s=delay)
                    else:
                        log.exception("fanout_failed", retry_in_s=delay)
                    self._drop_connection()
                    for subs in self._subs.values():
                        for sub in subs:
                            sub.interrupt(LOST)
                    await anyio.sleep(delay)
        finally:
            await self._close_connection()

    async def _connect(self) -> None:
        # No redis-py health check and no retry: either would make a request handler's SUBSCRIBE read from the
        # connection (a PING's reply, a reconnect's handshake) while _read() reads it too. The reader pings.
        self._client = Redis.from_url(
            self._redis_url, decode_responses=False, retry=Retry(NoBackoff(), 0), socket_keepalive=True
        )
        self._pubsub = self._client.pubsub()
        self.connections_opened += 1
        await self._pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        # Listed once connected: a channel added while connecting was not sent by its handler (_send)
        channels = list(self._subs)
        for channel in channels:
            event = self._confirmed.get(channel)
            if event is None or event.is_set():  # an unset one has a waiter: keep it
                self._confirmed[channel] = anyio.Event()
        if channels:
            await self._pubsub.subscribe(*channels)
        log.info("fanout_connected", channels=len(channels))

    async def _read(self) -> None:
        """The only code that reads the connection. Quiet for KEEPALIVE_S: it sends PING itself, and a connection
        that stays silent PONG_TIMEOUT_S more is dead (a half-open TCP connection never errors by itself)."""
        pubsub = self._pubsub
        assert pubsub is not None
        heard = anyio.current_time()
        pinged = False
        while not self._closed:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=READ_TIMEOUT_S)
            now = anyio.current_time()
            if message is not None:
                heard, pinged = now, False
                self._handle(message)
            elif pinged and now - heard > KEEPALIVE_S + PONG_TIMEOUT_S:
                raise redis.exceptions.TimeoutError(f"no answer to PING within {PONG_TIMEOUT_S} s")
            elif not pinged and now - heard > KEEPALIVE_S:
                await pubsub.ping()
                pinged = True

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("subscribe", b"subscribe"):
            if (event := self._confirmed.get(message["channel"].decode())) is not None:
                event.set()
        elif kind in ("message", b"message"):
            self._dispatch(message["channel"].decode(), message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        subs = self._subs.get(channel)
        if not subs:
            return
        try:
            body = loads(data)
        except ValueError:
            log.warning("fanout_bad_message", channel=channel)
            return
        item = Published(data, body if isinstance(body, dict) else {})
        for sub in subs:
            sub.push(item)
        if self._metrics is not None:
            self._metrics.events_fanned_out.inc(len(subs))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Yields once Redis confirmed the subscription, so a snapshot read afterwards misses nothing."""
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        sub = Subscription(channel, self._max_queued, self._max_bytes)
        subs = self._subs.setdefault(channel, set())
        first = not subs
        subs.add(sub)
        self._gauge()
        try:
            if first:
                self._confirmed[channel] = anyio.Event()
                await self._send("subscribe", channel)
            with anyio.move_on_after(SUBSCRIBE_TIMEOUT_S) as scope:
                await self._confirmed.setdefault(channel, anyio.Event()).wait()
            if scope.cancelled_caught:
                raise Unavailable("Redis did not confirm the subscription")
            yield sub
        finally:
            subs.discard(sub)
            if not subs and self._subs.get(channel) is subs:
                del self._subs[channel]
                self._confirmed.pop(channel, None)
                with anyio.CancelScope(shield=True):
                    await self._send("unsubscribe", channel)
            self._gauge()

    async def _send(self, command: str, channel: str) -> None:
        """Only writes: on a connection that is up, with no health check and no retry, redis-py reads nothing."""
        pubsub = self._pubsub
        if pubsub is None or pubsub.connection is None or not pubsub.connection.is_connected:
            return  # (re)connecting: run() subscribes every known channel when it connects
        try:
            await getattr(pubsub, command)(channel)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            log.warning("fanout_command_failed", command=command, error=str(exc))  # run() reconnects

    def close(self) -> None:
        """End every stream (shutdown): each client gets CLOSED."""
        self._closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.interrupt(CLOSED)

    def _drop_connection(self) -> None:
        self._pubsub = None
        for channel, event in list(self._confirmed.items()):
            if event.is_set():  # until the next connection confirms it (an unset one has a waiter: keep it)
                self._confirmed[channel] = anyio.Event()
        client, self._client = self._client, None
        if client is not None:
            # closing may block on a dead socket: leave it to the garbage collector's disconnect
            client.connection_pool.reset()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def _close_connection(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub, self._client = None, None
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.subscribed_sessions.set(len(self._subs))


class Resync:
    """A fresh snapshot the client is owed. It is read once the channel is subscribed again (read earlier, it could
    miss what is published before the subscription is back) and the store answers; until then the stream waits."""

    def __init__(self, fanout: Fanout, channel: str) -> None:
        self._fanout = fanout
        self._channel = channel
        # jittered: after a Redis restart the streams do not all come back at the same instant
        self._backoff = Backoff(RESYNC_RETRY_BASE_S, RESYNC_RETRY_CAP_S)
        self._retry_at = time.monotonic()

    def wait_s(self) -> float:
        """Until the next attempt (0: now)."""
        return max(0.0, self._retry_at - time.monotonic())

    async def read(self, read: Callable[[], Awaitable[T]]) -> T | None:
        """`read()`'s result, or None when it is too early: the channel is not subscribed yet, or the store is down."""
        if not self._fanout.confirmed(self._channel):
            self._later("the Redis subscription is not back yet")
            return None
        try:
            return await read()
        except STORE_DOWN as exc:
            self._later(str(exc))  # a SessionLayerError's str is its message
            return None

    def _later(self, reason: str) -> None:
        delay = self._backoff.failed(time.monotonic())
        self._retry_at = time.monotonic() + delay
        # once per stream and outage at warning: every stream retries every few seconds while it lasts
        emit = log.warning if self._backoff.failures == 1 else log.debug
        emit("resync_retry", error=reason, retry_in_s=round(delay, 2))
