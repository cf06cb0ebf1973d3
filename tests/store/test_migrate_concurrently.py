"""sql/006_backstop_index.sql builds its index CONCURRENTLY: writers go on meanwhile, other migrate replicas wait
without deadlocking it, a build cut short is built again, and databases that built it the old way stay up to date."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
import structlog

from shared.store.migrate import Migration, MigrationFailed, MigrationReport, load_migrations, migrate, migrate_report
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

INDEX = "opencode_sessions_unfinished_idx"
SHIPPED = {m.name: m for m in load_migrations()}
BEFORE_006 = [m for m in load_migrations() if m.name < "006"]
EVERY_RUN = [m.name for m in load_migrations() if m.every_run]
# The file's first text, applied by existing databases: the index built inside the migration's transaction.
FIRST_006 = Migration(
    "006_backstop_index.sql",
    "-- The PostgreSQL backstop walks every pending/running row in (started_at, id) order, a page at a time after a\n"
    "-- cursor (poller/reconcile.py). This index holds those rows only, in that order: each page reads its own rows\n"
    "-- and no others, however many sessions are unfinished and however many are archived.\n"
    "CREATE INDEX IF NOT EXISTS opencode_sessions_unfinished_idx\n"
    "    ON opencode_sessions (started_at, id) WHERE status IN ('pending', 'running');\n",
)


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def insert_row(conn: psycopg.AsyncConnection[Any], sid: str, status: str = "pending") -> None:
    await conn.execute("INSERT INTO opencode_sessions (id, session_type, status) VALUES (%s, 'ask', %s)", (sid, status))


async def index_state(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, str] | None:
    """(valid, definition) of the backstop index, or None when there is none."""
    cur = await conn.execute(
        "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = to_regclass(%s)", (INDEX,)
    )
    row = await cur.fetchone()
    return None if row is None else (bool(row[0]), str(row[1]))


async def build_waiting(probe: psycopg.AsyncConnection[Any]) -> bool:
    """The index build is waiting for a lock (another session's open transaction)."""
    cur = await probe.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{INDEX}%",),
    )
    return (await cur.fetchone()) == (1,)


async def open_write(url: str, sid: str) -> psycopg.AsyncConnection[Any]:
    """A poller's archive write, not yet committed: a concurrent build waits for it to end."""
    conn = await psycopg.AsyncConnection.connect(url)
    await insert_row(conn, sid)
    return conn


async def test_the_backstop_index_builds_while_the_pollers_keep_writing(fresh_database):
    async with await connect(fresh_database) as conn, await connect(fresh_database) as writer:
        await migrate(conn, BEFORE_006)
        async with await open_write(fresh_database, "old") as old, anyio.create_task_group() as tg:
            tg.start_soon(migrate, conn)
            await wait_for(lambda: build_waiting(writer), what="the build waiting for the open write")
            await writer.execute("SET lock_timeout = '10s'")  # a build inside a transaction holds writers past this
            await insert_row(writer, "new")
            await old.commit()
        state = await index_state(conn)
        assert state is not None and state[0] is True and "WHERE" in state[1]


async def test_a_replica_waiting_for_the_migrate_lock_does_not_deadlock_the_build(fresh_database):
    """The concurrent build waits for every older snapshot; a replica blocked inside pg_advisory_lock() holds one,
    while it waits for the builder's lock."""
    results: list[list[str]] = []

    async def replica(conn: psycopg.AsyncConnection[Any]) -> None:
        results.append(await migrate(conn))

    async def tried_the_lock(probe: psycopg.AsyncConnection[Any], pid: int) -> bool:
        cur = await probe.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return "advisory_lock" in str((await cur.fetchone() or ("",))[0])

    async with await connect(fresh_database) as first, await connect(fresh_database) as second:
        await migrate(first, BEFORE_006)
        async with (
            await connect(fresh_database) as probe,
            await open_write(fresh_database, "old") as old,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(replica, first)
            await wait_for(lambda: build_waiting(probe), what="the build waiting for the open write")
            tg.start_soon(replica, second)
            await wait_for(lambda: tried_the_lock(probe, second.info.backend_pid), what="the second replica")
            await old.commit()
    assert sorted(results, key=len) == [EVERY_RUN, [*EVERY_RUN, "006_backstop_index.sql"]]


async def test_an_index_left_invalid_by_a_failed_build_is_built_again(fresh_database):
    async with await connect(fresh_database) as conn:
        await migrate(conn, BEFORE_006)
        await insert_row(conn, "a")
        await insert_row(conn, "b")
        with pytest.raises(psycopg.errors.UniqueViolation):  # a concurrent build of that name that failed
            await conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON opencode_sessions (status)")
        assert (await index_state(conn) or (True, ""))[0] is False
        assert await migrate(conn) == [*EVERY_RUN, "006_backstop_index.sql"]
        state = await index_state(conn)
        assert state is not None and state[0] is True
        assert "UNIQUE" not in state[1] and "(started_at, id) WHERE" in state[1]
        await insert_row(conn, "c")  # the leftover unique index no longer refuses a third pending row


async def test_a_build_cut_short_fails_in_one_line_and_the_next_migrate_builds_it(fresh_database):
    async with await connect(fresh_database) as conn, await connect(fresh_database) as probe:
        await migrate(conn, BEFORE_006)
        failure = await interrupted_build(fresh_database, conn, probe, "pg_cancel_backend", MigrationFailed)
        assert str(failure) == "migration 006_backstop_index.sql failed: canceling statement due to user request"
        assert (await index_state(conn) or (True, ""))[0] is False  # what CONCURRENTLY leaves behind
        recorded = await (await conn.execute("SELECT name FROM opencode_schema_migrations ORDER BY name")).fetchall()
        assert [r[0] for r in recorded] == [m.name for m in BEFORE_006]
        assert await migrate(conn) == [*EVERY_RUN, "006_backstop_index.sql"]
        assert (await index_state(conn) or (False, ""))[0] is True


def test_the_shipped_file_replaces_its_first_text_and_builds_the_same_index():
    shipped = SHIPPED["006_backstop_index.sql"]
    assert FIRST_006.checksum in shipped.replaces
    assert shipped.no_transaction and not shipped.every_run
    assert shipped.concurrent_indexes == [INDEX]


async def test_a_database_that_built_the_index_in_a_transaction_is_up_to_date(fresh_database):
    async with await connect(fresh_database) as conn:
        await migrate(conn, [*BEFORE_006, FIRST_006])
        with structlog.testing.capture_logs() as logs:
            assert await migrate_report(conn) == MigrationReport([], EVERY_RUN)
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == []
        cur = await conn.execute(
            "SELECT checksum FROM opencode_schema_migrations WHERE name = '006_backstop_index.sql'"
        )
        assert await cur.fetchone() == (SHIPPED["006_backstop_index.sql"].checksum,)
        state = await index_state(conn)
        assert state is not None and state[0] is True


async def test_a_changed_file_that_replaces_nothing_recorded_is_not_run_again(fresh_database):
    """Re-running an applied file is unsafe unless it says otherwise: only a warning names it."""
    edited = Migration("003_session_requests.sql", SHIPPED["003_session_requests.sql"].sql + "\nSELECT 1/0;\n")
    async with await connect(fresh_database) as conn:
        await migrate(conn)
        others = [m for m in load_migrations() if m.name != edited.name]
        with structlog.testing.capture_logs() as logs:
            assert await migrate_report(conn, [*others, edited]) == MigrationReport([], EVERY_RUN)
        assert [(e["event"], e["migration"]) for e in logs if e["log_level"] == "warning"] == [
            ("migration_changed_after_apply", edited.name)
        ]


async def test_a_connection_lost_mid_build_raises_the_loss_itself_for_an_outage_message(fresh_database):
    """Not a second error from releasing the lock on the dead connection (the session's end released it)."""
    async with await connect(fresh_database) as conn, await connect(fresh_database) as probe:
        await migrate(conn, BEFORE_006)
        lost = await interrupted_build(fresh_database, conn, probe, "pg_terminate_backend", psycopg.OperationalError)
        assert type(lost) is psycopg.errors.AdminShutdown
        async with await connect(fresh_database) as again:
            assert await migrate(again) == [*EVERY_RUN, "006_backstop_index.sql"]


async def interrupted_build(
    database: str, conn: Any, probe: Any, interrupt: str, raises: type[BaseException]
) -> BaseException:
    """What `migrate` on `conn` raised once its concurrent build, waiting for an open write, had its backend hit with
    `interrupt` (pg_cancel_backend, pg_terminate_backend) by `probe`."""
    raised: list[BaseException] = []

    async def run() -> None:
        with pytest.raises(raises) as caught:
            await migrate(conn)
        raised.append(caught.value)

    async with await open_write(database, "old") as old:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await wait_for(lambda: build_waiting(probe), what="the build waiting for the open write")
            await probe.execute(f"SELECT {interrupt}(%s)", (conn.info.backend_pid,))
        await old.commit()
    return raised[0]
