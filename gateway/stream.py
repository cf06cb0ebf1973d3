"""The SSE endpoints: one session's changes in `seq` order, and the live-sessions list.

Per session: subscribe first, then read the snapshot, and drop every event at or below its `seq`, so no
change falls between the two. A gap, a `reset` (the live state was rebuilt), a client too slow for its
queue or a Redis reconnect all lead to a fresh `snapshot`; the final `complete` carries the archived row.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gateway.endpoints import read_session
from gateway.fanout import CLOSED, LOST, Published, Signal, Subscription
from gateway.sse import format_event, ping, retry_line
from gateway.state import GatewayState
from shared.backoff import Backoff
from shared.errors import NotFound, SessionLayerError, Unavailable
from shared.ids import SessionId, parse_session_id
from shared.models import FINAL_STATUSES, dumps
from shared.sessions import live_sessions
from shared.store import keys

log = structlog.get_logger(__name__)

RESYNC_RETRY_BASE_S = 0.1
RESYNC_RETRY_CAP_S = 5.0
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("lastEventId")


async def session_stream(request: Request) -> StreamingResponse:
    state = GatewayState.of(request)
    sid = parse_session_id(request.path_params["session_id"])
    state.auth.scope(request)  # 401 before any work
    subscription = state.fanout.subscribe(keys.updates(sid))
    sub = await subscription.__aenter__()
    try:
        snapshot = await read_session(state, sid)
        state.auth.require_session(request, sid, snapshot.get("ticketId"))
    except BaseException as exc:
        await subscription.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    body = _session_events(state, sid, sub, subscription, snapshot, _last_event_id(request))
    return StreamingResponse(body, media_type="text/event-stream", headers=STREAM_HEADERS)


async def _session_events(
    state: GatewayState,
    sid: SessionId,
    sub: Subscription,
    subscription: AbstractAsyncContextManager[Subscription],
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
            async for frame in _follow(state, sid, sub, int(snapshot["seq"])):
                yield frame
    finally:
        clients.dec()
        await subscription.__aexit__(None, None, None)


async def _follow(state: GatewayState, sid: SessionId, sub: Subscription, seq: int) -> AsyncIterator[bytes]:
    while True:
        item = await sub.get(state.ping_interval_s)
        if item is None:
            yield ping(_now_ms())
            continue
        if item is CLOSED:
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


async def live_stream(request: Request) -> StreamingResponse:
    """`snapshot` of the live list, then `appeared` / `status` / `ended` as the live index changes."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = request.query_params.get("type")
    subscription = state.fanout.subscribe(keys.LIVE_UPDATES)
    sub = await subscription.__aenter__()
    try:
        sessions = await live_sessions(state.redis, session_type=kind)
    except BaseException as exc:
        await subscription.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    body = _live_events(state, sub, subscription, sessions, kind)
    return StreamingResponse(body, media_type="text/event-stream", headers=STREAM_HEADERS)


async def _live_events(
    state: GatewayState,
    sub: Subscription,
    subscription: AbstractAsyncContextManager[Subscription],
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
            item = await sub.get(state.ping_interval_s)
            if item is None:
                yield ping(_now_ms())
                continue
            if item is CLOSED:
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
        await subscription.__aexit__(None, None, None)
