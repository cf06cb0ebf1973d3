"""The CLI against a PostgreSQL that does not answer in time: another transaction, left open, holds a lock the
command needs (a row being edited by hand, a table an ALTER or a VACUUM FULL holds). Each statement the CLI
runs is bounded (shared.cli.runtime.CLI_STATEMENT_TIMEOUT_MS): exit 1 with one line saying so. Was: the command
waited for as long as the lock was held, for ever.

The commands run in this process (click's runner) so that the bound can be made short for the test."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from click.testing import CliRunner, Result

from shared.cli import cli, runtime
from shared.clock import now_ms
from shared.ids import SessionId
from shared.store import archive
from shared.store.live import LiveState
from shared.store.migrate import migrate
from shared.store.transactions import committed
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

SID = SessionId("ses_000000000000000000LOCKED1")
DEADLINE_S = 30.0  # far past the bound: reaching it means the command waited on the lock


async def invoke(args: list[str], env: dict[str, str]) -> Result:
    """`opencode-sessions ARGS` in a worker thread; the test fails at DEADLINE_S rather than wait with it."""
    runner = CliRunner()
    with anyio.fail_after(DEADLINE_S):
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli, args, env=env), abandon_on_cancel=True)


def one_line(result: Result, code: int, *words: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
async def database(fresh_database: str) -> str:
    """A migrated database of this test's own (its table gets locked) holding one pending session."""
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
        await migrate(conn)
        state = LiveState(session_id=SID, session_type="ask", started_at=now_ms())
        async with committed(conn):
            await archive.insert_pending(conn, state, user_metadata={}, prompts=[])
    return fresh_database


async def test_a_command_that_waits_on_a_lock_ends_with_one_line(database, redis_url, monkeypatch):
    monkeypatch.setattr(runtime, "CLI_STATEMENT_TIMEOUT_MS", 300, raising=False)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database}
    async with await psycopg.AsyncConnection.connect(database) as holder:  # autocommit off: its locks stay held
        await holder.execute("SELECT id FROM opencode_sessions WHERE id = %s FOR UPDATE", (SID,))
        cancelled = await invoke(["cancel", SID], env)  # it updates that row
        await holder.execute("LOCK TABLE opencode_sessions IN ACCESS EXCLUSIVE MODE")
        listed = await invoke(["history"], env)
        await holder.rollback()
    for result in (cancelled, listed):
        one_line(result, 1, "PostgreSQL did not finish in time", "statement timeout", "lock")
    assert (await invoke(["history"], env)).exit_code == 0  # the lock gone, the same command answers


async def test_a_bound_given_by_pgoptions_is_kept(database, redis_url, monkeypatch):
    """An operator's own statement_timeout (PGOPTIONS, the role's, the database's) is theirs to choose."""
    monkeypatch.setattr(runtime, "CLI_STATEMENT_TIMEOUT_MS", 300, raising=False)
    env: dict[str, Any] = {"REDIS_URL": redis_url, "DATABASE_URL": database, "PGOPTIONS": "-c statement_timeout=20s"}
    async with await psycopg.AsyncConnection.connect(database) as holder:
        await holder.execute("LOCK TABLE opencode_sessions IN ACCESS EXCLUSIVE MODE")
        async with anyio.create_task_group() as tg:
            results: list[Result] = []

            async def history() -> None:
                results.append(await invoke(["history"], env))

            tg.start_soon(history)
            await wait_for_waiter(database)
            await holder.rollback()  # the command still waits: the 300 ms bound did not apply
    assert results[0].exit_code == 0, results[0].output


async def wait_for_waiter(database: str) -> None:
    """Until a backend of this database has waited on a lock for a second, thrice the bound (asked outside the
    holder's transaction, which would read pg_stat_activity as it was when it first looked)."""
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await wait_for(lambda: waiters(conn), timeout=DEADLINE_S, what="a command waiting on the lock")


async def waiters(conn: Any) -> int:
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND clock_timestamp() - query_start > interval '1 second'"
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
