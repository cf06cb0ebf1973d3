"""`history` and the Python API's archived list: page walks through the CLI, bad cursors, open transactions."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from shared import sessions
from shared.dev.processes import free_port
from tests.helpers import run_cli, single_error_line

pytestmark = pytest.mark.anyio
START = datetime(2026, 1, 1, 12, 0, 0, 123_000)


def sid(i: int) -> str:
    return f"ses_{i:026d}"


async def archive_row(db: Any, i: int, started: datetime) -> None:
    """A row as another backend writes it, started_at to the microsecond (the column's default is `now()`)."""
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at,"
        " completed_at) VALUES (%s, 'T-CLI', 'ask', 'completed', '[]', '{}', %s, %s)",
        (sid(i), started, started),
    )


async def test_history_walks_every_session_once_when_starts_share_a_millisecond(db, schema):
    """Was: `--before` of a page skipped the rest of its last session's millisecond (one session of five listed)."""
    micros = [900, 5, 500, 500, 0]
    for i, us in enumerate(micros):
        await archive_row(db, i, START + timedelta(microseconds=us))
    expected = [s for _, s in sorted(((us, sid(i)) for i, us in enumerate(micros)), reverse=True)]
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(10):
        result = await run_cli(
            ["history", "--ticket", "T-CLI", "--limit", "1", "--json", *cursor], {"DATABASE_URL": schema}
        )
        assert result.returncode == 0, result
        page = json.loads(result.stdout)
        seen += [s["sessionId"] for s in page["sessions"]]
        if page["nextCursor"] is None:
            break
        cursor = ["--before", page["nextCursor"]]
    assert seen == expected


def test_a_cursor_is_exact_to_the_microsecond_and_canonical():
    """Was the millisecond alone: the start of a row another backend wrote could not be told from its neighbours'."""
    started = START + timedelta(microseconds=7)
    assert sessions.decode_cursor(sessions.cursor_of(started, sid(1))) == (started, sid(1))
    assert sessions.decode_cursor(sessions.cursor_of(START, sid(1))) == (START, sid(1))


@pytest.mark.parametrize("raw", ["1767268800123.000", "1767268800123.7", "1767268800123.1000", "1767268800123.-01"])
async def test_a_forged_cursor_is_exit_2_naming_before(raw):
    """Only the form a page prints; the one line names `--before` (was: `invalid cursor '…'`, naming nothing)."""
    cursor = base64.urlsafe_b64encode(f"{raw}:{sid(1)}".encode()).decode().rstrip("=")
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/opencode"
    result = await run_cli(["history", "--before", cursor], {"DATABASE_URL": unreachable})
    single_error_line(result, 2, "invalid cursor", "--before")


async def test_the_archived_list_leaves_no_transaction_open(db, schema):
    """README: reads leave no transaction open, whatever the connection's mode. Was: one left open by the list on
    a connection with autocommit off (psycopg's default), holding its snapshot until the caller committed."""
    await archive_row(db, 1, START)
    async with await psycopg.AsyncConnection.connect(schema) as conn:
        page = await sessions.archived_sessions(conn, ticket_id="T-CLI")
        assert [s["sessionId"] for s in page["sessions"]] == [sid(1)]
        assert conn.info.transaction_status == TransactionStatus.IDLE
