"""The SSE endpoints: one session's changes in `seq` order, and the live-sessions list.

Per session: subscribe first, then read the snapshot, and drop every event at or below its `seq`, so no
change falls between the two. A gap, a `reset` (the live state was rebuilt), a client too slow for its
queue or a Redis reconnect all lead to a fresh `snapshot`; the final `complete` carries the archived row.
The live list sends a fresh `snapshot` after a Redis reconnect or a client too slow for its queue. A session stream
quiet for a ping interval, and the live list each ping interval, check that Redis still holds what they show: a
FLUSHALL drops no connection, so nothing else would tell them (the live state followed, or a session listed, gone:
a fresh `snapshot`).

A stream owed a fresh snapshot while Redis or PostgreSQL is unreachable waits for them (a read inside a started
response has no status left to fail with): it keeps pinging, and reads once its subscription is back.
A `ping` goes out when nothing else was written for a ping interval (events a filter skips count for nothing).

Every stream ends with its token: at the token's `exp` it sends `token-expired` and closes, so a client refreshes
its token and resumes with Last-Event-ID. A client whose queued events outgrow GATEWAY_STREAM_BUFFER_BYTES is
dropped (the stream ends; it resumes the same way).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio
import structlog
from psycopg_pool import PoolTimeout
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from gateway.endpoints import path_id, read_covered, read_session, require_covered, type_filter
from gateway.fanout import CLOSED, DROPPED, LOST, STORE_DOWN, Published, Resync, Signal, Subscription
from gateway.query import query_param, single_header
from gateway.session_reads import SessionRead
from gateway.sse import escaped_event, format_event, ping, retry_line, token_expired
from gateway.state import GatewayState
from shared.clock import now_ms
from shared.errors import NotFound, SessionLayerError
from shared.event_stream import EventStreamResponse
from shared.ids import SessionId, parse_session_id
from shared.models import FINAL_STATUSES, dumps, dumps_bytes
from shared.sessions import live_sessions
from shared.store import keys

log = structlog.get_logger(__name__)

LOSS_CHECK_TIMEOUT_S = 2.0  # a quiet stream's check that Redis still holds what it shows (_redis_lost)
PING: Final = Signal("PING")  # nothing was written for a ping interval: send one
EXPIRED: Final = Signal("EXPIRED")  # the stream's token reached its `exp`
# What the live index publishes (README: the live list stream); a backend's enqueue passes its `appeared` itself.
LIVE_EVENTS = frozenset({"appeared", "status", "ended"})
STREAM_HEADERS = {
    "Cache-Control": "no-store, no-transform",  # a session's content: kept by no cache, a browser's included
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


def _last_event_id(request: Request) -> str | None:
    """`Last-Event-ID` (or `?lastEventId=`), each given at most once (a 400 otherwise, before the stream opens)."""
    return single_header(request, "last-event-id") or query_param(request, "lastEventId")


def _head() -> Response:
    """HEAD of a stream: its status and headers, no body. Was: the stream itself, which never ends, so the
    connection (kept alive: a HEAD answer has no body to wait for) hung, holding a stream slot and a subscription."""
    response = Response(headers=STREAM_HEADERS, media_type=EventStreamResponse.media_type)
    del response.headers["content-length"]
    return response


class Lifetime:
    """Until when a stream may run (its token's `exp`; None: auth off, no end), and when its next ping is due."""

    def __init__(self, expires_at: int | None, ping_interval_s: float) -> None:
        self.expires_at = expires_at
        self._ping_interval_s = ping_interval_s
        self._sent_at = time.monotonic()

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    @property
    def ping_due(self) -> bool:
        return time.monotonic() - self._sent_at >= self._ping_interval_s

    def sent(self) -> None:
        """A frame was written: the next ping is due a full interval from now."""
        self._sent_at = time.monotonic()

    def wait_s(self, cap_s: float | None = None) -> float:
        """How long to wait for the next event: until a ping is due, the token ends or `cap_s`, whichever is first."""
        wait = self._sent_at + self._ping_interval_s - time.monotonic()
        if self.expires_at is not None:
            wait = min(wait, self.expires_at - time.time())
        if cap_s is not None:
            wait = min(wait, cap_s)
        return max(0.0, wait)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, SessionLayerError) else str(exc)


async def _open(request: Request, state: GatewayState, channel: str) -> tuple[AsyncExitStack, Subscription, Lifetime]:
    """Check the token (401 before any work), take one of its stream slots (429), subscribe (5xx): held until
    the stream ends, released by closing the returned stack."""
    grant = state.auth.grant(request)
    stack = AsyncExitStack()
    try:
        stack.enter_context(state.slots.hold(state.auth.token(request) if grant is not None else None))
        sub = await stack.enter_async_context(state.fanout.subscribe(channel))
    except BaseException:
        await stack.aclose()
        raise
    return stack, sub, Lifetime(grant.expires_at if grant is not None else None, state.ping_interval_s)


async def _sent(
    state: GatewayState, stream: str, stack: AsyncExitStack, lifetime: Lifetime, frames: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """A stream's body: `frames`, each one putting the next ping off; counted while open, and its slot and
    subscription released when it ends."""
    clients = state.metrics.sse_clients.labels(stream)
    clients.inc()
    try:
        yield retry_line()
        async for frame in frames:
            yield frame
            lifetime.sent()
            del frame  # a snapshot's frame is a whole session: not kept until the next frame comes
    finally:
        clients.dec()
        await stack.aclose()


async def session_stream(request: Request) -> Response:
    state = GatewayState.of(request)
    sid = path_id(request, "session_id", parse_session_id)
    state.auth.require_own_session(request, sid)
    last_event_id = _last_event_id(request)
    if request.method == "HEAD":
        await require_covered(request, state, sid)
        return _head()
    stack, sub, lifetime = await _open(request, state, keys.updates(sid))
    try:
        snapshot = await read_covered(request, state, sid)
    except BaseException:
        await stack.aclose()
        raise
    frames = _session_events(state, sid, sub, lifetime, snapshot, last_event_id)
    return EventStreamResponse(_sent(state, "session", stack, lifetime, frames), headers=STREAM_HEADERS)


async def _session_events(
    state: GatewayState,
    sid: SessionId,
    sub: Subscription,
    lifetime: Lifetime,
    snapshot: SessionRead,
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    with structlog.contextvars.bound_contextvars(session_id=sid):
        seq, live, ended = int(snapshot.session["seq"]), bool(snapshot.session["live"]), _ended(snapshot)
        frames = _opening(snapshot, owed=last_event_id != str(seq) or not live, ended=ended)
        del snapshot  # a long session's whole read: not kept for as long as the stream stays open
        while frames:
            yield frames.pop(0)
        if ended:
            return
        async for frame in _follow(state, sid, sub, lifetime, seq, live=live):
            yield frame


async def _next(
    state: GatewayState, sub: Subscription, lifetime: Lifetime, resync: Resync | None
) -> Published | Signal | None:
    """The next item for a stream: an event, a signal (PING and EXPIRED included), or None to go round again (an
    owed snapshot may be due). A ping is due by time, however many events came that the stream did not send."""
    if lifetime.expired:
        state.metrics.streams_ended.labels("token_expired").inc()
        return EXPIRED
    if lifetime.ping_due:
        return PING
    item = await sub.get(lifetime.wait_s(resync.wait_s() if resync is not None else None))
    if item is DROPPED:
        state.metrics.streams_ended.labels("slow_client").inc()
        log.info("stream_dropped", reason="queued events passed GATEWAY_STREAM_BUFFER_BYTES", channel=sub.channel)
    return item


def _control(item: Signal, lifetime: Lifetime) -> bytes | None:
    """The frame a signal sends (a ping, `token-expired`), or None; the stream ends after every signal but PING."""
    if item is PING:
        return ping(now_ms())
    if item is EXPIRED and lifetime.expires_at is not None:
        return token_expired(lifetime.expires_at)
    return None


async def _follow(
    state: GatewayState, sid: SessionId, sub: Subscription, lifetime: Lifetime, seq: int, *, live: bool = True
) -> AsyncIterator[bytes]:
    """Updates after `seq`, of a session whose last snapshot was `live` (else the archive of one not yet queued
    again: its `reset` comes)."""
    resync: Resync | None = None
    while True:
        if resync is not None and resync.wait_s() == 0 and not lifetime.expired:  # none past exp
            try:
                snapshot = await resync.read(lambda: read_session(state, sid))
            except NotFound as exc:
                yield format_event("error", dumps({"error": exc.message}))
                return
            if snapshot is not None:
                resync = None
                seq, live, ended = int(snapshot.session["seq"]), bool(snapshot.session["live"]), _ended(snapshot)
                frames = _opening(snapshot, owed=True, ended=ended)
                snapshot = None  # as when the stream opened: not kept while it follows
                while frames:
                    yield frames.pop(0)
                if ended:
                    return
        item = await _next(state, sub, lifetime, resync)
        if item is None:
            continue
        if item in (PING, EXPIRED, CLOSED, DROPPED):
            assert isinstance(item, Signal)
            if (frame := _control(item, lifetime)) is not None:
                yield frame
            if item is not PING:
                return
            # a live state followed and gone (an archive followed waits for the backstop's `reset`)
            if resync is None and live and await _redis_lost(state.redis.exists(keys.session(sid))):
                state.metrics.resyncs.labels("vanished").inc()
                resync = Resync(state.fanout, sub.channel)
            continue
        if resync is not None:
            continue  # the snapshot owed covers it
        reason = _resync_reason(item, seq)
        if reason is not None:
            state.metrics.resyncs.labels(reason).inc()
            resync = Resync(state.fanout, sub.channel)
            continue
        assert isinstance(item, Published)
        if item.seq <= seq:
            continue  # already in the snapshot
        seq = item.seq
        if item.type == "complete":
            yield await _complete(state, sid, item)
            return
        yield item.frame("update")


async def _redis_lost(held: Awaitable[object]) -> bool:
    """Has Redis lost what a quiet stream shows, while the pub/sub connection stayed up (FLUSHALL, a failover that
    kept the address: no LOST says so)? `held` is the read that asks. Was: a session archived just before the loss
    never sent its `complete` or `ended` (finish.lua had nothing left to end), and its followers, and the live list,
    went on showing it live; as they did a running session the backstop had not queued again yet, or would not.
    An outage or a slow answer says no: the fanout's reconnect covers those."""
    with anyio.move_on_after(LOSS_CHECK_TIMEOUT_S):
        try:
            return not await held
        except (*STORE_DOWN, RedisError, OSError):
            return False
    return False


async def _all_listed(redis: Redis, shown: set[str]) -> bool:
    """Is every session a live list shows still in the live index?"""
    return not shown or None not in await redis.zmscore(keys.LIVE_INDEX, list(shown))


def _ended(snapshot: SessionRead) -> bool:
    """Archived with a final status. A `pending`/`running` row without live state is being re-queued by the
    poller's backstop: the stream waits for its `reset` rather than calling it complete."""
    return not snapshot.session["live"] and snapshot.session["status"] in FINAL_STATUSES


def _resync_reason(item: Published | Signal, seq: int) -> str | None:
    if item is LOST:
        return "lost"
    assert isinstance(item, Published)
    if item.type == "reset":
        return "reset"
    if item.seq > seq + 1:
        return "gap"
    return None


async def _complete(state: GatewayState, sid: SessionId, item: Published) -> bytes:
    """The final event carries the archived session: the poller publishes `complete` only after the commit."""
    try:
        final = (await read_session(state, sid)).event_data(item.seq)
    except (SessionLayerError, PoolTimeout) as exc:
        log.warning("complete_without_archive", error=_reason(exc))
        return format_event("complete", dumps_bytes({**item.body, "live": False, "seq": item.seq}), item.seq)
    return escaped_event("complete", final, item.seq)


def _opening(snapshot: SessionRead, *, owed: bool, ended: bool) -> list[bytes]:
    """The frames a snapshot sends: itself unless the client holds it (`owed`), then `complete` if it `ended`. Their
    data is encoded once for every client of the read (SessionRead)."""
    seq = snapshot.session["seq"]
    frames = [escaped_event("snapshot", snapshot.event_data(), seq)] if owed else []
    if ended:
        frames.append(escaped_event("complete", snapshot.event_data(), seq))
    return frames


async def live_stream(request: Request) -> Response:
    """`snapshot` of the live list, then `appeared` / `status` / `ended` as the live index changes."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = type_filter(request)
    if request.method == "HEAD":
        return _head()
    stack, sub, lifetime = await _open(request, state, keys.LIVE_UPDATES)
    try:
        sessions = await live_sessions(state.redis, session_type=kind)
    except BaseException:
        await stack.aclose()
        raise
    frames = _live_events(state, sub, lifetime, sessions, kind)
    return EventStreamResponse(_sent(state, "live", stack, lifetime, frames), headers=STREAM_HEADERS)


async def _live_events(
    state: GatewayState, sub: Subscription, lifetime: Lifetime, sessions: list[dict[str, Any]], kind: str | None
) -> AsyncIterator[bytes]:
    """Event ids count the events sent (the list has no `seq`: a reconnecting client gets a fresh `snapshot`)."""
    counter = 1
    yield format_event("snapshot", dumps({"sessions": sessions}), counter)
    shown = {str(s["sessionId"]) for s in sessions}
    resync: Resync | None = None
    check_at = time.monotonic() + state.ping_interval_s
    while True:
        if resync is None and time.monotonic() >= check_at:  # each ping interval, however busy the list is
            check_at = time.monotonic() + state.ping_interval_s
            if await _redis_lost(_all_listed(state.redis, shown)):
                state.metrics.resyncs.labels("vanished").inc()
                resync = Resync(state.fanout, sub.channel)
        if resync is not None and resync.wait_s() == 0 and not lifetime.expired:  # none past exp
            fresh = await resync.read(lambda: live_sessions(state.redis, session_type=kind))
            if fresh is not None:
                resync, shown = None, {str(s["sessionId"]) for s in fresh}
                counter += 1
                yield format_event("snapshot", dumps({"sessions": fresh}), counter)
        item = await _next(state, sub, lifetime, resync)
        if item is None:
            continue
        if item in (PING, EXPIRED, CLOSED, DROPPED):
            assert isinstance(item, Signal)
            if (frame := _control(item, lifetime)) is not None:
                yield frame
            if item is not PING:
                return
            continue
        if resync is not None:
            continue  # the snapshot owed covers it
        if item is LOST:
            state.metrics.resyncs.labels("lost").inc()
            resync = Resync(state.fanout, sub.channel)
            continue
        assert isinstance(item, Published)
        if kind is not None and item.body.get("sessionType") != kind:
            continue
        if item.type not in LIVE_EVENTS:  # the event's name is sent as it is: a line break in it would forge frames
            log.warning("live_event_unknown", type=str(item.type)[:80])
            continue
        counter += 1
        yield format_event(item.type, item.raw, counter)
        if isinstance(listed := item.body.get("sessionId"), str):
            (shown.discard if item.type == "ended" else shown.add)(listed)
