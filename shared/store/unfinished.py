"""The reads of the archive's unfinished rows: the backstop's (every pending/running row, a page at a time, and
those Redis lost read again in full: poller.reconcile), and a ticket's (its live sessions, should its pointer be
gone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.rows import class_row, scalar_row

from shared.ids import SessionId, TicketId
from shared.store.archive import ROW_COLUMNS, ArchiveRow, PgConnection, fetch_rows
from shared.store.connections import store_errors

# The backstop's walk: pending/running rows in (started_at, id) order, a page at a time after a cursor; the
# partial index of sql/006_backstop_index.sql holds exactly these rows in this order (an index-only scan).
# started_at travels as PostgreSQL's own text, which Python never decodes: a row another backend wrote with a
# time Python cannot hold ('infinity', a year past 9999) would otherwise stop the walk at its page. ORDER BY names
# the table's column (s.started_at): a bare name would be the text the SELECT makes of it, in another order.
_UNFINISHED = (
    "SELECT s.started_at::text AS started_at, s.id FROM opencode_sessions AS s"
    " WHERE s.status IN ('pending', 'running') ORDER BY s.started_at, s.id LIMIT %s"
)
_UNFINISHED_AFTER = (
    "SELECT s.started_at::text AS started_at, s.id FROM opencode_sessions AS s"
    " WHERE s.status IN ('pending', 'running') AND (s.started_at, s.id) > (%s::timestamp, %s)"
    " ORDER BY s.started_at, s.id LIMIT %s"
)
_OF_TICKET = (
    "SELECT id FROM opencode_sessions WHERE ticket_id = %s AND status IN ('pending', 'running')"
    " ORDER BY started_at DESC, id DESC LIMIT %s"
)
_STILL_UNFINISHED = (
    f"SELECT {ROW_COLUMNS} FROM opencode_sessions WHERE id = ANY(%s) AND status IN ('pending', 'running')"
)


@dataclass(frozen=True, slots=True)
class RowKey:
    """Where a pending/running row sits in the backstop's walk: its cursor (started_at is NOT NULL), the time as
    PostgreSQL's text of it, given back as is."""

    started_at: str
    id: str


async def unfinished(db: PgConnection, after: RowKey | None, limit: int) -> list[RowKey]:
    """The next `limit` pending/running rows after `after` (from the oldest when None), keys only: the backstop
    walks them all a page at a time, and reads whole rows only for those Redis lost (`still_unfinished`).

    The cursor includes the id, so rows that share a start time are neither skipped nor read twice.
    """
    sql, params = (_UNFINISHED, (limit,)) if after is None else (_UNFINISHED_AFTER, (after.started_at, after.id, limit))
    with store_errors("PostgreSQL"):
        async with db.cursor(row_factory=class_row(RowKey)) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()


async def still_unfinished(db: PgConnection, session_ids: Sequence[str]) -> list[ArchiveRow]:
    """Those of `session_ids` whose rows are still pending/running, read again now.

    The owner commits the archive before it deletes the job in Redis, so a row read again after its job was seen
    gone is final if the session ended meanwhile: a backstop that trusted its first read would run it again.
    """
    return await fetch_rows(db, _STILL_UNFINISHED, (list(session_ids),))


async def of_ticket(db: PgConnection, ticket_id: TicketId, limit: int) -> list[SessionId]:
    """The ids of the ticket's pending and running rows, newest first: its live sessions, unless Redis lost one."""
    with store_errors("PostgreSQL"):
        async with db.cursor(row_factory=scalar_row) as cur:
            await cur.execute(_OF_TICKET, (ticket_id, limit))
            return [SessionId(sid) for sid in await cur.fetchall()]
