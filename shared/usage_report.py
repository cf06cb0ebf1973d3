"""The read side of usage: a ticket's sessions with what each used, and totals over a filter.

Ended sessions are summed in PostgreSQL; a session still running is counted with its live usage from Redis
(its row holds the usage only once archived), so a total is current while runs go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from shared.ids import SessionId, parse_ticket_id
from shared.models import as_text
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.live import LiveState
from shared.store.usage_sums import (
    MAX_SESSIONS_PER_TICKET,
    UsageFilter,
    UsageRow,
    ended_sum_and_unfinished,
    rows_by_id,
    ticket_rows,
)
from shared.usage import Usage

_LIVE_FIELDS = ("sessionId", "status", "usage")


async def _live(redis: Redis, rows: Sequence[UsageRow]) -> dict[str, LiveState]:
    """The live state (status and usage) of those rows that are unfinished and still have one."""
    ids = [row.id for row in rows if row.unfinished]
    if not ids:
        return {}
    with store_errors("Redis"):
        async with redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(keys.session(SessionId(sid)), _LIVE_FIELDS)
            answers = await pipe.execute()
    out = {}
    for values in answers:
        state = LiveState.decode(dict(zip(_LIVE_FIELDS, values, strict=True)))
        if state is not None:
            out[as_text(state.session_id)] = state
    return out


async def ticket_usage(redis: Redis, db: Any, ticket_id: str) -> dict[str, Any]:
    """`{ticketId, total, sessions: [{sessionId, sessionType, status, startedAt, live, usage}]}`, newest first."""
    ticket = parse_ticket_id(ticket_id)
    rows = await ticket_rows(db, ticket)
    live = await _live(redis, rows)
    rows = await _settled(db, rows, live)
    sessions, usages = [], []
    for row in rows:
        state = live.get(row.id)
        usage = _usage_of(row, live)
        usages.append(usage)
        sessions.append(
            {
                "sessionId": row.id,
                "sessionType": row.session_type,
                "status": state.status if state is not None else row.status,
                "startedAt": row.started_at_ms,
                "live": state is not None,
                "usage": usage.to_json(),
            }
        )
    if len(rows) < MAX_SESSIONS_PER_TICKET:
        return {"ticketId": ticket, "total": Usage.total(usages).to_json(), "sessions": sessions}
    # the list holds the newest MAX_SESSIONS_PER_TICKET only: the total is summed over them all, as `usage` does
    # (was: over the listed ones, silently short for a ticket with more)
    total = await usage_totals(redis, db, UsageFilter(ticket_id=ticket))
    return {"ticketId": ticket, "total": total["usage"], "sessions": sessions}


async def usage_totals(redis: Redis, db: Any, where: UsageFilter) -> dict[str, Any]:
    """`{sessions, usage}`: how many sessions the filter covers and what they used together."""
    ended, running = await ended_sum_and_unfinished(db, where)
    live = await _live(redis, running)
    usages = [ended.usage, *(_usage_of(row, live) for row in await _settled(db, running, live))]
    return {"sessions": int(ended.sessions) + len(running), "usage": Usage.total(usages).to_json()}


def _usage_of(row: UsageRow, live: dict[str, LiveState]) -> Usage:
    state = live.get(row.id)
    return state.usage if state is not None else row.usage


async def _settled(db: Any, rows: list[UsageRow], live: dict[str, LiveState]) -> list[UsageRow]:
    """The rows, those read unfinished that have no live state read again: archived between the two reads, a
    row's usage is in the row now (was: counted with the zeros it held while running)."""
    gone = [row.id for row in rows if row.unfinished and row.id not in live]
    if not gone:
        return rows
    now = {row.id: row for row in await rows_by_id(db, gone)}
    return [now.get(row.id, row) for row in rows]
