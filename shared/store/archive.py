"""The `opencode_sessions` table: its row type, ArchiveRow, and every statement any process runs on it.

The columns are fixed by the host app's schema. Our own bookkeeping lives inside the metadata column under
LAYER_KEY: the title, every prompt with its messageID (so the PostgreSQL backstop can re-queue a session whose
Redis state was lost), a requested cancel, and the fencing epoch of the last owner that wrote the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb, set_json_loads

from shared.config import DEFAULT_SERVER
from shared.errors import InvalidInput
from shared.ids import SessionId, TicketId, parse_ticket_id
from shared.store.connections import store_errors
from shared.store.live import LiveState
from shared.store.times import read_any_time
from shared.store.unstorable import dumps_jsonb, escape_text, loads_jsonb, restore_text
from shared.usage import Usage

PgConnection = psycopg.AsyncConnection[Any]

LAYER_KEY = "sessionLayer"
COLUMNS = "id, ticket_id, session_type, status, messages, metadata, started_at, completed_at, error_message"
# sql/005_usage.sql: what the session used, summed over its assistant messages when it is archived
USAGE_COLUMNS = "tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, tokens_cache_write, cost, steps"
# sql/004_servers.sql: where the session ran (NULL: the default server, the server's own directory)
PLACE_COLUMNS = "server, directory"
ROW_COLUMNS = f"{COLUMNS}, {USAGE_COLUMNS}, {PLACE_COLUMNS}"
UNFINISHED = ("pending", "running")

_SELECT_ONE = f"SELECT {ROW_COLUMNS} FROM opencode_sessions WHERE id = %s"

_INSERT_PENDING = f"""
INSERT INTO opencode_sessions ({COLUMNS}, {PLACE_COLUMNS})
VALUES (%s, %s, %s, 'pending', '[]', %s, %s, NULL, NULL, %s, %s)
"""

_REOPEN = f"""
UPDATE opencode_sessions SET status = 'pending', completed_at = NULL, error_message = NULL,
    metadata = jsonb_set(coalesce(metadata, '{{}}'::jsonb), '{{{LAYER_KEY}}}', %s)
WHERE id = %s
"""

_REQUEST_CANCEL = f"""
UPDATE opencode_sessions SET
    metadata = jsonb_set(coalesce(metadata, '{{}}'::jsonb), '{{{LAYER_KEY}}}',
                         coalesce(metadata -> '{LAYER_KEY}', '{{}}'::jsonb) || '{{"cancel": true}}'::jsonb)
WHERE id = %s AND status IN ('pending', 'running')
RETURNING {ROW_COLUMNS}
"""

# A follow-up prompt `send` queued on a live session, recorded where the backstop finds it (unless the owner already
# did): Redis may lose the job before the owner's next claim record. A row whose metadata (or our key in it) another
# backend wrote as something other than an object is left as it is: jsonb_set would fail on it.
_PROMPTS = f"coalesce(metadata #> '{{{LAYER_KEY},prompts}}', '[]'::jsonb)"
_LAYER = f"coalesce(metadata -> '{LAYER_KEY}', '{{}}'::jsonb)"
# An ended row is running again for a prompt recorded on a live job (its owner's finish goes on) unless a cancel
# was asked: its owner drops the prompts of a cancelled session and ends it anyway.
_KEEPS_STATUS = f"(status IN ('pending', 'running') OR {_LAYER} -> 'cancel' = 'true'::jsonb)"
_RECORD_PROMPT = f"""
UPDATE opencode_sessions SET
    status = CASE WHEN {_KEEPS_STATUS} THEN status ELSE 'running' END,
    completed_at = CASE WHEN {_KEEPS_STATUS} THEN completed_at END,
    error_message = CASE WHEN {_KEEPS_STATUS} THEN error_message END,
    metadata = jsonb_set(metadata, '{{{LAYER_KEY}}}', {_LAYER} || jsonb_build_object('prompts', {_PROMPTS} || %s))
WHERE id = %s
    AND jsonb_typeof(metadata) = 'object' AND jsonb_typeof({_LAYER}) = 'object'
    AND NOT {_PROMPTS} @> jsonb_build_array(jsonb_build_object('messageID', %s::text))
"""

# The owner's write, at claim (`running`) and at the end (the archive): fenced by the epoch in the row.
_UPSERT = f"""
INSERT INTO opencode_sessions AS s ({ROW_COLUMNS})
VALUES (%(id)s, %(ticket_id)s, %(session_type)s, %(status)s, %(messages)s, %(metadata)s, %(started_at)s,
        %(completed_at)s, %(error)s, %(tokens_input)s, %(tokens_output)s, %(tokens_reasoning)s,
        %(tokens_cache_read)s, %(tokens_cache_write)s, %(cost)s, %(steps)s, %(server)s, %(directory)s)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    messages = CASE WHEN %(keep_messages)s THEN s.messages ELSE excluded.messages END,
    tokens_input = CASE WHEN %(keep_messages)s THEN s.tokens_input ELSE excluded.tokens_input END,
    tokens_output = CASE WHEN %(keep_messages)s THEN s.tokens_output ELSE excluded.tokens_output END,
    tokens_reasoning = CASE WHEN %(keep_messages)s THEN s.tokens_reasoning ELSE excluded.tokens_reasoning END,
    tokens_cache_read = CASE WHEN %(keep_messages)s THEN s.tokens_cache_read ELSE excluded.tokens_cache_read END,
    tokens_cache_write = CASE WHEN %(keep_messages)s THEN s.tokens_cache_write ELSE excluded.tokens_cache_write END,
    cost = CASE WHEN %(keep_messages)s THEN s.cost ELSE excluded.cost END,
    steps = CASE WHEN %(keep_messages)s THEN s.steps ELSE excluded.steps END,
    metadata = jsonb_set(coalesce(s.metadata, '{{}}'::jsonb), '{{{LAYER_KEY}}}',
                         coalesce(s.metadata -> '{LAYER_KEY}', '{{}}'::jsonb) || %(layer)s),
    completed_at = excluded.completed_at,
    error_message = excluded.error_message,
    server = coalesce(s.server, excluded.server)
WHERE coalesce((s.metadata #>> '{{{LAYER_KEY},epoch}}')::bigint, 0) <= %(epoch)s
RETURNING coalesce(s.metadata -> '{LAYER_KEY}' -> 'prompts', '[]'::jsonb)
"""

_SET_PROMPTS = (
    f"UPDATE opencode_sessions SET metadata = jsonb_set(metadata, '{{{LAYER_KEY},prompts}}', %s) WHERE id = %s"
)


EPOCH = datetime(1970, 1, 1)  # the columns are UTC `timestamp`s without time zone
_MILLISECOND = timedelta(milliseconds=1)


def to_timestamp(epoch_ms: int) -> datetime:
    """The columns are `timestamp` without time zone: we store UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).replace(tzinfo=None)


def to_epoch_ms(value: datetime | None) -> int | None:
    """The column's UTC time in epoch ms, counted exactly (a float rounded the last microsecond of year 9999 up,
    past what Python holds)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - EPOCH) // _MILLISECOND


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One row; `message_count` is filled by the history read only."""

    id: str
    ticket_id: str | None
    session_type: str
    status: str
    messages: list[Any] | None
    metadata: Any
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    message_count: int | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    tokens_reasoning: int = 0
    tokens_cache_read: int = 0
    tokens_cache_write: int = 0
    cost: Decimal = Decimal(0)
    steps: int = 0
    server: str | None = None
    directory: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage.of_columns(self)

    @property
    def layer(self) -> dict[str, Any]:
        """Our bookkeeping (a copy): title, prompts, cancel, epoch, seq."""
        if isinstance(self.metadata, dict) and isinstance(self.metadata.get(LAYER_KEY), dict):
            return dict(self.metadata[LAYER_KEY])
        return {}

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """The metadata as the caller gave it, without our bookkeeping."""
        if not isinstance(self.metadata, dict):
            return None
        return {k: v for k, v in self.metadata.items() if k != LAYER_KEY}

    @property
    def epoch(self) -> int:
        return int(self.layer.get("epoch") or 0)

    @property
    def prompts(self) -> list[dict[str, str]]:
        return list(self.layer.get("prompts") or [])

    @property
    def cancel_requested(self) -> bool:
        return bool(self.layer.get("cancel"))

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    def pending_state(self, now_ms: int) -> LiveState:
        """The live state to queue this row again with (revive, backstop)."""
        return LiveState(
            session_id=SessionId(self.id),
            ticket_id=parse_ticket_id(self.ticket_id) if self.ticket_id else None,
            session_type=self.session_type,
            title=self.layer.get("title"),
            started_at=to_epoch_ms(self.started_at) or now_ms,
            updated_at=now_ms,
            metadata=self.user_metadata,
            server=self.server,
            directory=self.directory,
            usage=self.usage,  # what its earlier runs used: counted while the session is live again, as archived
        )

    def to_session(self) -> dict[str, Any]:
        """An archived row in the same shape as live state, with `live: false`."""
        layer = self.layer
        return {
            "sessionId": SessionId(self.id),
            "ticketId": self.ticket_id,
            "sessionType": self.session_type,
            "status": self.status,
            "title": layer.get("title"),
            "messages": self.messages or [],
            "currentToolCalls": [],
            "error": self.error_message,
            "startedAt": to_epoch_ms(self.started_at),
            "updatedAt": to_epoch_ms(self.completed_at) or to_epoch_ms(self.started_at),
            "completedAt": to_epoch_ms(self.completed_at),
            "metadata": self.user_metadata,
            "seq": int(layer.get("seq") or 0),
            "live": False,
            "usage": self.usage.to_json(),
            "server": self.server or DEFAULT_SERVER,
            "directory": self.directory,
            "pending": [],
        }


def _jsonb(value: Any) -> Jsonb:
    """A jsonb parameter; characters PostgreSQL refuses are escaped, NaN and Infinity written null (unstorable)."""
    return Jsonb(value, dumps=dumps_jsonb)


def _restored(row: ArchiveRow) -> ArchiveRow:
    if row.error_message is None:
        return row
    return replace(row, error_message=restore_text(row.error_message))


async def fetch_rows(db: PgConnection, sql: str, params: Sequence[Any]) -> list[ArchiveRow]:
    """Rows as they were written: the jsonb columns and the error restored from their escaped form."""
    with store_errors("PostgreSQL"):
        async with db.cursor(row_factory=class_row(ArchiveRow)) as cur:
            set_json_loads(loads_jsonb, cur)
            read_any_time(cur)
            await cur.execute(sql, params)
            return [_restored(row) for row in await cur.fetchall()]


async def fetch(db: PgConnection, session_id: SessionId, *, for_update: bool = False) -> ArchiveRow | None:
    """The row; for_update locks it to the caller's transaction, for a write computed from what it read."""
    rows = await fetch_rows(db, _SELECT_ONE + (" FOR UPDATE" if for_update else ""), (session_id,))
    return rows[0] if rows else None


async def ticket_of(db: PgConnection, session_id: SessionId) -> list[str | None]:
    """The row's ticket id, without its messages: [] when there is no row."""
    with store_errors("PostgreSQL"):
        cur = await db.execute("SELECT ticket_id FROM opencode_sessions WHERE id = %s", (session_id,))
        return [row[0] for row in await cur.fetchall()]


async def insert_pending(
    db: PgConnection,
    state: LiveState,
    *,
    user_metadata: Mapping[str, Any],
    prompts: Sequence[Mapping[str, str]],
) -> None:
    """The row of a new session, written before Redis hears of it; InvalidInput for a ticket the host lacks."""
    layer = {"title": state.title, "prompts": list(prompts), "epoch": 0}
    params = (
        state.session_id,
        state.ticket_id,
        state.session_type,
        _jsonb({**user_metadata, LAYER_KEY: layer}),
        to_timestamp(state.started_at),
        state.server,
        state.directory,
    )
    with store_errors("PostgreSQL"):
        try:
            await db.execute(_INSERT_PENDING, params)
        except psycopg.errors.ForeignKeyViolation:
            raise InvalidInput(f"unknown ticket {state.ticket_id}: the tickets table has no such id") from None


async def reopen(db: PgConnection, row: ArchiveRow, prompt: Mapping[str, str]) -> None:
    """An archived session gets a follow-up: `pending` again, the prompt recorded, any old cancel forgotten. The
    caller read `row` FOR UPDATE in this transaction: the prompts written are the row's own plus this one."""
    layer = {k: v for k, v in row.layer.items() if k != "cancel"}
    layer["prompts"] = [*row.prompts, dict(prompt)]
    with store_errors("PostgreSQL"):
        await db.execute(_REOPEN, (_jsonb(layer), row.id))


async def record_prompt(db: PgConnection, session_id: SessionId, prompt: Mapping[str, str]) -> None:
    """Add a prompt to the row's prompts, once (by messageID). The caller has just queued it on a live job, so an
    ended row is one its owner is finishing, whose fenced finish the prompt turns into "goes on": the row is
    running again. Was: left ended, the prompt in Redis alone until the owner's next tick, and lost (the backstop
    passes over an ended row) when Redis lost its data meanwhile."""
    with store_errors("PostgreSQL"):
        await db.execute(_RECORD_PROMPT, (_jsonb([dict(prompt)]), session_id, prompt["messageID"]))


async def request_cancel(db: PgConnection, session_id: SessionId) -> ArchiveRow | None:
    """Record a cancel in a pending/running row (the backstop honours it); None when no such row."""
    rows = await fetch_rows(db, _REQUEST_CANCEL, (session_id,))
    return rows[0] if rows else None


ENDED = ("completed", "error", "cancelled")  # the statuses `history` lists: archived


async def history(
    db: PgConnection,
    *,
    ticket_id: TicketId | None,
    session_type: str | None,
    before: tuple[datetime, SessionId] | None,
    server: str | None = None,
    directory: str | None = None,
    limit: int,
    include_messages: bool,
) -> list[ArchiveRow]:
    """Ended sessions newest first after `before` (started_at to the µs, id), each with its message_count."""
    clauses = ["status IN ('completed', 'error', 'cancelled')"]  # ENDED
    params: list[Any] = []
    if ticket_id is not None:
        clauses.append("ticket_id = %s")
        params.append(ticket_id)
    if session_type is not None:
        clauses.append("session_type = %s")
        params.append(session_type)
    if server is not None:
        clauses.append("coalesce(server, %s) = %s")
        params += [DEFAULT_SERVER, server]
    if directory is not None:
        clauses.append("directory = %s")
        params.append(directory)
    if before is not None:
        clauses.append("(started_at, id) < (%s, %s)")
        params += [before[0], before[1]]
    columns = ROW_COLUMNS if include_messages else ROW_COLUMNS.replace("messages", "'[]'::jsonb AS messages", 1)
    sql = (
        f"SELECT {columns}, jsonb_array_length(coalesce(messages, '[]'::jsonb)) AS message_count"
        f" FROM opencode_sessions WHERE {' AND '.join(clauses)} ORDER BY started_at DESC, id DESC LIMIT %s"
    )
    return await fetch_rows(db, sql, [*params, limit])


async def upsert_fenced(
    db: PgConnection,
    state: LiveState,
    epoch: int,
    *,
    status: str,
    prompts: Sequence[Mapping[str, str]] = (),
    messages: Sequence[Any] = (),
    keep_messages: bool = False,
    error: str | None = None,
    completed_ms: int | None = None,
    extra_layer: Mapping[str, Any] | None = None,
    now_ms: int,
) -> bool:
    """The owner's write (run it in a transaction); False, and nothing written, when the row has a newer epoch.

    New prompts are added to those the row records, by messageID.
    """
    layer: dict[str, Any] = {"epoch": epoch, "title": state.title, **(extra_layer or {})}
    params = {
        "id": state.session_id,
        "ticket_id": state.ticket_id,
        "session_type": state.session_type,
        "status": status,
        "messages": _jsonb(list(messages)),
        "metadata": _jsonb({**(state.metadata or {}), LAYER_KEY: layer}),
        "started_at": to_timestamp(state.started_at or now_ms),
        "completed_at": to_timestamp(completed_ms) if completed_ms else None,
        "error": escape_text(error) if error is not None else None,
        "keep_messages": keep_messages,
        "server": state.server,
        "directory": state.directory,
        **(Usage() if keep_messages else Usage.of_messages(messages)).columns(),
        "layer": _jsonb(layer),
        "epoch": epoch,
    }
    with store_errors("PostgreSQL"):
        async with db.cursor(row_factory=scalar_row) as cur:
            set_json_loads(loads_jsonb, cur)
            await cur.execute(_UPSERT, params)
            recorded: list[Any] | None = await cur.fetchone()  # the prompts the row already had
        if recorded is None:
            return False
        known = {p.get("messageID") for p in recorded if isinstance(p, dict)}
        new = [dict(p) for p in prompts if p.get("messageID") not in known]
        if new:
            await db.execute(_SET_PROMPTS, (_jsonb([*recorded, *new]), state.session_id))
    return True
