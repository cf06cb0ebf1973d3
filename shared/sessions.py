"""The read side: a session's live state from Redis, else its archived row from PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from shared.config import DEFAULT_SERVER
from shared.errors import InvalidInput, NotFound
from shared.ids import SessionId, TicketId, parse_session_id, parse_ticket_id
from shared.models import as_text
from shared.store import archive, keys, unfinished
from shared.store.connections import store_errors
from shared.store.live import STATUS_FIELD, SUMMARY_FIELDS, LiveState, json_or, read_record
from shared.store.transactions import committed


async def read_live(redis: Redis, session_id: SessionId) -> dict[str, Any] | None:
    """The live session object, or None when the session has no live state."""
    record = await read_record(redis, session_id)
    return record.to_session() if record is not None else None


async def read_archived(db: Any, session_id: SessionId) -> dict[str, Any] | None:
    row = await archive.fetch(db, session_id)
    return row.to_session() if row is not None else None


async def get_session(redis: Redis, db: Any, session_id: str) -> dict[str, Any]:
    """Live state if the session is live, else the archive; NotFound when neither has it."""
    sid = parse_session_id(session_id)
    live = await read_live(redis, sid)
    if live is not None:
        return live
    async with committed(db, reads_only=True):
        archived = await read_archived(db, sid)
    if archived is None:
        raise NotFound(f"session {sid} not found")
    return archived


async def ticket_of(redis: Redis, pool: AsyncConnectionPool, session_id: SessionId) -> str | None:
    """The session's ticket id as stored, read without its messages: what a HEAD needs to be authorised (was: the
    whole session read, tens of MB for a long one, then dropped). NotFound when neither store has it."""
    with store_errors("Redis"):
        live_id, ticket = await redis.hmget(keys.session(session_id), ["sessionId", "ticketId"])
    if live_id is not None:
        return (as_text(ticket) or None) if ticket is not None else None
    async with pool.connection() as conn, committed(conn, reads_only=True):
        rows = await archive.ticket_of(conn, session_id)
    if not rows:
        raise NotFound(f"session {session_id} not found")
    return rows[0]


async def active_session_id(redis: Redis, ticket: TicketId, pool: AsyncConnectionPool) -> SessionId | None:
    """The ticket's live session: the one its pointer names while it has live state, else the newest of its
    unfinished rows that has (was a 404 while an older session of the ticket still ran, once a newer one had ended:
    its end clears the pointer that named it); None when it has none. A pool connection only when the pointer
    misses."""
    with store_errors("Redis"):
        pointer = await redis.get(keys.ticket_active(ticket))
        if pointer is not None and await redis.exists(keys.session(sid := parse_session_id(as_text(pointer)))):
            return sid
    async with pool.connection() as conn, committed(conn, reads_only=True):
        candidates = await unfinished.of_ticket(conn, ticket, ACTIVE_CANDIDATES)
    for candidate in candidates:
        with store_errors("Redis"):
            if await redis.exists(keys.session(candidate)):
                return candidate
    return None


ACTIVE_CANDIDATES = 20  # unfinished rows of a ticket looked at for its live session when its pointer is gone


LIVE_READ_CHUNK = 500  # summaries read per pipeline


async def live_sessions(
    redis: Redis,
    *,
    session_type: str | None = None,
    limit: int | None = None,
    server: str | None = None,
    directory: str | None = None,
) -> list[dict[str, Any]]:
    """Summaries of live sessions from the live index (never a key scan), newest first, every one the filters
    match (up to `limit`). Was: the newest 500 only, filtered after the cut: past 500 live sessions the rest were
    left out (`nextCursor` null all the same), and `type=admin` found none when 500 newer chats were live."""
    with store_errors("Redis"):
        ids = await redis.zrevrange(keys.LIVE_INDEX, 0, -1)  # one read: a walk by rank would skip and repeat
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), LIVE_READ_CHUNK):
        with store_errors("Redis"):
            async with redis.pipeline(transaction=False) as pipe:
                for raw in ids[start : start + LIVE_READ_CHUNK]:
                    pipe.hmget(keys.session(SessionId(as_text(raw))), SUMMARY_FIELDS)
                rows = await pipe.execute()
        for values in rows:
            state = LiveState.decode(dict(zip(SUMMARY_FIELDS, values, strict=True)))
            # None: the session ended between the index read and this one
            if state is not None and (session_type is None or state.session_type == session_type):
                summary = state.summary()
                if (server is None or summary["server"] == server) and (
                    directory is None or state.directory == directory
                ):
                    out.append(summary)
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


MAX_CURSOR_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant Python's datetime holds
# 0001-01-01T00:00:00Z, its first: a row another backend started before 1970 (or BC, read as the first instant:
# shared.store.times) is in the pages too, and the cursor after it must continue the walk
MIN_CURSOR_MS = -62_135_596_800_000
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(started_at_ms: int, session_id: str, sub_ms_us: int = 0) -> str:
    """`ms:id`, or `ms.uuu:id` for a start with microseconds past its millisecond (`sub_ms_us`, 1-999)."""
    when = f"{started_at_ms}.{sub_ms_us:03d}" if sub_ms_us else str(started_at_ms)
    return base64.urlsafe_b64encode(f"{when}:{session_id}".encode()).decode().rstrip("=")


def cursor_of(started_at: datetime, session_id: str) -> str:
    """The cursor after a row, exact to its microsecond: a row another backend wrote with `now()` (the column's
    default) has them. Was: the millisecond alone, so a page after such a row skipped every row of that
    millisecond below it (a ticket of ten such rows listed one a page, then ended)."""
    started_ms, sub_ms_us = divmod((started_at - archive.EPOCH) // _MICROSECOND, 1000)
    return encode_cursor(started_ms, session_id, sub_ms_us)


def decode_cursor(cursor: str) -> tuple[datetime, SessionId]:
    """A cursor only as `encode_cursor` writes them (a page's `nextCursor`), of a time PostgreSQL and Python can both
    hold. Was: a well-formed one of the year 318857 reached the query (exit 1, an unexpected ValueError)."""
    error = InvalidInput(f"invalid cursor {cursor[:40]!r}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, sid_text = raw.split(":", 1)
        ms_text, dot, sub_text = when.partition(".")
        started, sub, sid = int(ms_text), int(sub_text) if dot else 0, parse_session_id(sid_text)
    except (ValueError, UnicodeDecodeError, InvalidInput):
        raise error from None
    if (
        not MIN_CURSOR_MS <= started <= MAX_CURSOR_MS
        or not 0 <= sub < 1000
        or encode_cursor(started, sid, sub) != cursor
    ):
        raise error
    return archive.EPOCH + timedelta(milliseconds=started, microseconds=sub), sid


async def archived_sessions(
    db: Any,
    *,
    ticket_id: str | None = None,
    session_type: str | None = None,
    limit: int = 20,
    before: str | None = None,
    include_messages: bool = False,
    server: str | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    """Archived (ended) sessions newest first, `limit` at a time; `nextCursor` continues the list. Like every read
    of the API it leaves no transaction open (was: one, on a connection with autocommit off)."""
    ticket = parse_ticket_id(ticket_id) if ticket_id is not None else None
    after = decode_cursor(before) if before is not None else None
    async with committed(db, reads_only=True):
        rows = await archive.history(
            db,
            ticket_id=ticket,
            session_type=session_type,
            before=after,
            limit=limit + 1,
            include_messages=include_messages,
            server=server,
            directory=directory,
        )
    items = []
    for row in rows[:limit]:
        session = row.to_session()
        session["messageCount"] = row.message_count
        if not include_messages:
            del session["messages"]
        items.append(session)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        assert last.started_at is not None  # NOT NULL in the schema
        # a start before year 1 (BC, -infinity) reads as year 1 (shared.store.times): a cursor there would find the
        # same row again, so the walk ends at it (what is older still shows in a larger page)
        next_cursor = cursor_of(last.started_at, last.id) if last.started_at != datetime.min else None
    return {"sessions": items, "nextCursor": next_cursor}


# --- operator reads for `opencode-sessions status` -----------------------------------------------------------------

STATUS_SCAN_CHUNK = 500


async def queue_depth(redis: Redis, now_ms: int) -> dict[str, int]:
    """Jobs in `opencode:queue`: `due` (score <= now: claimable) and `leased` (score in the future: held)."""
    with store_errors("Redis"):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zcard(keys.QUEUE)
            pipe.zcount(keys.QUEUE, "-inf", now_ms)
            total, due = await pipe.execute()
    return {"total": int(total), "due": int(due), "leased": int(total) - int(due)}


async def live_status_counts(redis: Redis) -> dict[str, int]:
    """How many live sessions there are in each status, from the live index (chunked, never a key scan)."""
    return await _live_counts(redis, lambda status, _: status)


async def live_server_counts(redis: Redis) -> dict[str, int]:
    """How many live sessions each OpenCode server holds (`default` for those that name none), chunked."""
    return await _live_counts(redis, lambda _, server: server or DEFAULT_SERVER)


async def _live_counts(redis: Redis, key_of: Callable[[str, str | None], str]) -> dict[str, int]:
    """Live sessions counted by `key_of(status, server)`, walking the live index a chunk at a time."""
    counts: dict[str, int] = {}
    start = 0
    with store_errors("Redis"):
        while True:
            ids = await redis.zrange(keys.LIVE_INDEX, start, start + STATUS_SCAN_CHUNK - 1)
            if not ids:
                break
            async with redis.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hmget(keys.session(SessionId(as_text(raw))), [STATUS_FIELD, "server"])
                rows = await pipe.execute()
            for status, server in rows:
                if status is not None:  # ended between the two reads
                    name = key_of(as_text(status), as_text(server) if server else None)
                    counts[name] = counts.get(name, 0) + 1
            if len(ids) < STATUS_SCAN_CHUNK:
                break
            start += STATUS_SCAN_CHUNK
    return counts


def parse_server_urls(raw: bytes | str | None) -> dict[str, str]:
    """A heartbeat's `serverUrls` (a JSON object: server name -> URL); empty when absent (a replica from before
    it) or unreadable, and without the entries that are not text."""
    urls = json_or(as_text(raw) if raw else None, dict, {})
    return {name: url for name, url in urls.items() if isinstance(name, str) and isinstance(url, str)}


async def poller_replicas(redis: Redis, now_ms: int) -> list[dict[str, Any]]:
    """Every replica in `opencode:pollers`, most recent heartbeat first, with what its heartbeat hash says.

    `alive` is false when the hash has expired (the replica stopped beating); its last heartbeat stays in the
    ZSET until a replica of the same id beats again.
    """
    with store_errors("Redis"):
        rows: Any = await redis.zrevrange(keys.POLLERS, 0, -1, withscores=True)
        entries = [(as_text(member), float(score)) for member, score in rows]
        async with redis.pipeline(transaction=False) as pipe:
            for replica, _ in entries:
                pipe.hgetall(keys.poller(replica))
            hashes = await pipe.execute()
    out = []
    for (replica, score), fields in zip(entries, hashes, strict=True):
        raw = {as_text(k): as_text(v) for k, v in fields.items()}
        heartbeat = int(raw.get("heartbeatAt") or score)
        try:
            held = json.loads(raw.get("sessions") or "[]")
        except ValueError:
            held = []
        started = raw.get("startedAt")
        out.append(
            {
                "replicaId": replica,
                "alive": bool(raw),
                "host": raw.get("host"),
                "pid": int(raw["pid"]) if raw.get("pid") else None,
                "startedAt": int(started) if started else None,
                "heartbeatAt": heartbeat,
                "heartbeatAgeMs": max(0, now_ms - heartbeat),
                "sessions": [str(s) for s in held] if isinstance(held, list) else [],
                "maxSessions": int(raw["maxSessions"]) if raw.get("maxSessions") else None,
                "serverUrls": parse_server_urls(raw.get("serverUrls")),
            }
        )
    return out
