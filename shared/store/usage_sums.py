"""The usage statements on `opencode_sessions` (sql/005_usage.sql's columns): sums and per-session rows.

Ended rows hold their final usage; a pending or running row holds zeros (or the usage of its last run, if it
came back for a follow-up) until it is archived again, so readers take a live session's usage from Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import class_row

from shared.config import DEFAULT_SERVER
from shared.ids import TicketId
from shared.store.archive import UNFINISHED, PgConnection, to_epoch_ms
from shared.store.connections import store_errors
from shared.store.times import read_any_time
from shared.store.transactions import committed
from shared.usage import Usage

_SUMS = (
    "count(*) AS sessions, coalesce(sum(tokens_input), 0) AS tokens_input,"
    " coalesce(sum(tokens_output), 0) AS tokens_output, coalesce(sum(tokens_reasoning), 0) AS tokens_reasoning,"
    " coalesce(sum(tokens_cache_read), 0) AS tokens_cache_read,"
    " coalesce(sum(tokens_cache_write), 0) AS tokens_cache_write,"
    " coalesce(sum(cost), 0) AS cost, coalesce(sum(steps), 0) AS steps"
)
_TOKENS = "tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, tokens_cache_write, cost, steps"
_ROW = f"id, ticket_id, session_type, status, started_at, {_TOKENS}"
# A ticket has a handful of sessions; this bounds the answer for one that somehow has very many.
MAX_SESSIONS_PER_TICKET = 1000


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One session's usage as archived, or the sum over several (`sessions` of them)."""

    tokens_input: int
    tokens_output: int
    tokens_reasoning: int
    tokens_cache_read: int
    tokens_cache_write: int
    cost: Decimal
    steps: int
    sessions: int = 1
    id: str = ""
    ticket_id: str | None = None
    session_type: str = ""
    status: str = ""
    started_at: datetime | None = None

    @property
    def usage(self) -> Usage:
        return Usage.of_columns(self)

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    @property
    def started_at_ms(self) -> int | None:
        return to_epoch_ms(self.started_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageFilter:
    """Which sessions a sum covers; None is no filter."""

    ticket_id: TicketId | None = None
    session_type: str | None = None
    since: datetime | None = None  # started at or after (UTC, naive as the column)
    server: str | None = None  # `default`: the rows that name no server

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.ticket_id is not None:
            clauses.append("ticket_id = %s")
            params.append(self.ticket_id)
        if self.session_type is not None:
            clauses.append("session_type = %s")
            params.append(self.session_type)
        if self.server is not None:
            clauses.append("coalesce(server, %s) = %s")
            params += [DEFAULT_SERVER, self.server]
        if self.since is not None:
            clauses.append("started_at >= %s")
            params.append(self.since)
        return " AND ".join(clauses), params


async def _rows(db: PgConnection, sql: str, params: list[Any]) -> list[UsageRow]:
    """Like every read of the API, it leaves no transaction open on a connection without autocommit."""
    with store_errors("PostgreSQL"):
        async with committed(db, reads_only=True), db.cursor(row_factory=class_row(UsageRow)) as cur:
            read_any_time(cur)
            await cur.execute(sql, params)
            return await cur.fetchall()


async def ended_sum_and_unfinished(db: PgConnection, where: UsageFilter) -> tuple[UsageRow, list[UsageRow]]:
    """The sum over the ended sessions the filter covers, and its pending and running sessions (their usage is
    live, in Redis), from one statement: one snapshot. Was two statements, and a session archived between them
    was in neither."""
    clause, params = where.where()
    sql = f"""
    WITH covered AS NOT MATERIALIZED (SELECT {_ROW} FROM opencode_sessions WHERE {clause})
    SELECT {_SUMS}, '' AS id, NULL AS ticket_id, '' AS session_type, '' AS status, NULL::timestamp AS started_at
        FROM covered WHERE status NOT IN ('pending', 'running')
    UNION ALL
    SELECT 1, {_TOKENS}, id, ticket_id, session_type, status, started_at
        FROM covered WHERE status IN ('pending', 'running')
    """
    rows = await _rows(db, sql, params)
    [ended] = [row for row in rows if not row.status]  # a UNION ALL keeps no order: the sum is the row of no status
    return ended, [row for row in rows if row.status]


async def rows_by_id(db: PgConnection, ids: Sequence[str]) -> list[UsageRow]:
    """These sessions' rows as they are now (a row read as running may have been archived since)."""
    return await _rows(db, f"SELECT {_ROW} FROM opencode_sessions WHERE id = ANY(%s)", [list(ids)])


async def ticket_rows(db: PgConnection, ticket_id: TicketId) -> list[UsageRow]:
    """Every session of the ticket with its archived usage, newest first."""
    sql = f"SELECT {_ROW} FROM opencode_sessions WHERE ticket_id = %s ORDER BY started_at DESC, id DESC LIMIT %s"
    return await _rows(db, sql, [ticket_id, MAX_SESSIONS_PER_TICKET])
