"""The SSE endpoints: one session's changes in `seq` order, and the live-sessions list.

Per session: subscribe first, then read the snapshot, and drop every event at or below its `seq`, so no
change falls between the two. A gap, a `reset` (the live state was rebuilt), a client too slow for its
queue or a Redis reconnect all lead to a fresh `snapshot`; the final `complete` carries the archived row.

Every stream ends with its token: at the token's `exp` it sends `token-expired` and closes, so a client refreshes
its token and resumes with Last-Event-ID. A client whose queued events outgrow GATEWAY_STREAM_BUFFER_BYTES is
dropped (the stream ends; it resumes the same way).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio
import structlog
from starlette.requests import Request

from gateway.endpoints import read_session
from gateway.fanout import CLOSED, DROPPED, LOST, Published, Signal, Subscription
from gateway.sse import format_event, ping, retry_line, token_expired
from gateway.state import GatewayState
from shared.backoff import Backoff
from shared.clock import now_ms
from shared.errors import NotFound, SessionLayerError, Unavailable
from shared.event_stream import EventStreamResponse
from shared.ids import SessionId, parse_session_id
from shared.models import FINAL_STATUSES, dumps
from shared.sessions import live_sessions
from shared.store import keys

log = structlog.get_logger(__name__)

RESYNC_RETRY_BASE_S = 0.1
RESYNC_RETRY_CAP_S = 5.0
PING: Final = Signal("PING")  # nothing came for a ping interval: send one
EXPIRED: Final = Signal("EXPIRED")  # the stream's token reached its `exp`
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


def _last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("lastEventId")


class Lifetime:
    """Until when a stream may run: its token's `exp` (None: auth off, no end)."""

    def __init__(self, expires_at: int | None, ping_interval_s: float) -> None:
        self.expires_at = expires_at
        self._ping_interval_s = ping_interval_s

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    def wait_s(self) -> float:
        """How long to wait for the next event: a ping interval, or less when the token ends sooner."""
        if self.expires_at is None:
            return self._ping_interval_s
        return max(0.0, min(self._ping_interval_s, self.expires_at - time.time()))

    def is_ping_due(self, waited_s: float) -> bool:
        return waited_s >= self._ping_interval_s


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


async def session_stream(request: Request) -> EventStreamResponse:
    state = GatewayState.of(request)
    sid = parse_session_id(request.path_params["session_id"])
    stack, sub, lifetime = await _open(request, state, keys.updates(sid))
    try:
        snapshot = await read_session(state, sid)
        state.auth.require_session(request, sid, snapshot.get("ticketId"))
    except BaseException:
        await stack.aclose()
        raise
    body = _session_events(state, sid, sub, stack, lifetime, snapshot, _last_event_id(request))
    return EventStreamResponse(body, headers=STREAM_HEADERS)


async def _session_events(
    state: GatewayState,
    sid: SessionId,
    sub: Subscription,
    stack: AsyncExitStack,
    lifetime: Lifetime,
    snapshot: dict[str, Any],
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    clients = state.metrics.sse_clients.labels("session")
    clients.inc()
    try:
        with structlog.contextvars.bound_contextvars(session_id=sid):
            yield retry_line()
            if last_event_id != str(snapshot["seq"]) or not snapshot["live"]:
                yield _snapshot(snapshot)
            if _ended(snapshot):
                yield format_event("complete", dumps(snapshot), snapshot["seq"])
                return
            async for frame in _follow(state, sid, sub, lifetime, int(snapshot["seq"])):
                yield frame
    finally:
        clients.dec()
        await stack.aclose()


async def _next(state: GatewayState, sub: Subscription, lifetime: Lifetime) -> Published | Signal | None:
    """The next item for a stream: an event, a signal (PING and EXPIRED included), or None to wait again."""
    if lifetime.expired:
        state.metrics.streams_ended.labels("token_expired").inc()
        return EXPIRED
    wait_s = lifetime.wait_s()
    item = await sub.get(wait_s)
    if item is None:
        return PING if lifetime.is_ping_due(wait_s) else None
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
    state: GatewayState, sid: SessionId, sub: Subscription, lifetime: Lifetime, seq: int
) -> AsyncIterator[bytes]:
    while True:
        item = await _next(state, sub, lifetime)
        if item is None:
            continue
        if item in (PING, EXPIRED, CLOSED, DROPPED):
            assert isinstance(item, Signal)
            if (frame := _control(item, lifetime)) is not None:
                yield frame
            if item is PING:
                continue
            return
        resync = _resync_reason(item, seq)
        if resync is not None:
            state.metrics.resyncs.labels(resync).inc()
            try:
                snapshot = await _read_when_available(state, sid)
            except NotFound as exc:
                yield format_event("error", dumps({"error": exc.message}))
                return
            yield _snapshot(snapshot)
            if _ended(snapshot):
                yield format_event("complete", dumps(snapshot), snapshot["seq"])
                return
            seq = int(snapshot["seq"])
            continue
        assert isinstance(item, Published)
        if item.seq <= seq:
            continue  # already in the snapshot
        seq = item.seq
        if item.type == "complete":
            yield await _complete(state, sid, item)
            return
        yield item.frame("update")


async def _read_when_available(state: GatewayState, sid: SessionId) -> dict[str, Any]:
    """A resync right after a Redis restart may find it still down: wait for it rather than drop the client."""
    # jittered: after a Redis restart the streams do not all come back at the same instant
    backoff = Backoff(RESYNC_RETRY_BASE_S, RESYNC_RETRY_CAP_S)
    while True:
        try:
            return await read_session(state, sid)
        except Unavailable as exc:
            delay = backoff.failed(time.monotonic())
            log.warning("resync_retry", error=exc.message, retry_in_s=round(delay, 2))
            await anyio.sleep(delay)


def _ended(snapshot: dict[str, Any]) -> bool:
    """Archived with a final status. A `pending`/`running` row without live state is being re-queued by the
    poller's backstop: the stream waits for its `reset` rather than calling it complete."""
    return not snapshot["live"] and snapshot["status"] in FINAL_STATUSES


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
        final = await read_session(state, sid)
    except SessionLayerError as exc:
        log.warning("complete_without_archive", error=exc.message)
        final = {**item.body, "live": False}
    final["seq"] = item.seq
    return format_event("complete", dumps(final), item.seq)


def _snapshot(snapshot: dict[str, Any]) -> bytes:
    return format_event("snapshot", dumps(snapshot), snapshot["seq"])


async def live_stream(request: Request) -> EventStreamResponse:
    """`snapshot` of the live list, then `appeared` / `status` / `ended` as the live index changes."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = request.query_params.get("type")
    stack, sub, lifetime = await _open(request, state, keys.LIVE_UPDATES)
    try:
        sessions = await live_sessions(state.redis, session_type=kind)
    except BaseException:
        await stack.aclose()
        raise
    body = _live_events(state, sub, stack, lifetime, sessions, kind)
    return EventStreamResponse(body, headers=STREAM_HEADERS)


async def _live_events(
    state: GatewayState,
    sub: Subscription,
    stack: AsyncExitStack,
    lifetime: Lifetime,
    sessions: list[dict[str, Any]],
    kind: str | None,
) -> AsyncIterator[bytes]:
    clients = state.metrics.sse_clients.labels("live")
    clients.inc()
    counter = 1
    try:
        yield retry_line()
        yield format_event("snapshot", dumps({"sessions": sessions}), counter)
        while True:
            item = await _next(state, sub, lifetime)
            if item is None:
                continue
            if item in (PING, EXPIRED, CLOSED, DROPPED):
                assert isinstance(item, Signal)
                if (frame := _control(item, lifetime)) is not None:
                    yield frame
                if item is PING:
                    continue
                return
            counter += 1
            if item is LOST:
                sessions = await live_sessions(state.redis, session_type=kind)
                yield format_event("snapshot", dumps({"sessions": sessions}), counter)
                continue
            assert isinstance(item, Published)
            if kind is not None and item.body.get("sessionType") != kind:
                continue
            yield format_event(item.type or "status", item.raw.decode(), counter)
    finally:
        clients.dec()
        await stack.aclose()
