"""shared.store.migrate against a real PostgreSQL: each test gets a database of its own, created and dropped here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared.store.migrate import (
    MIGRATE_LOCK_ID,
    Migration,
    MigrationFailed,
    load_migrations,
    migrate,
    sql_dir_candidates,
)

pytestmark = pytest.mark.anyio

FK_NAME = "opencode_sessions_ticket_id_fkey"
ALL = [m.name for m in load_migrations()]
EVERY_RUN = [m.name for m in load_migrations() if m.every_run]


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def fetchall(conn: psycopg.AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def insert_row(conn: psycopg.AsyncConnection[Any], sid: str, status: str, ticket_id: str) -> None:
    await conn.execute(
        "INSERT INTO opencode_sessions (id, session_type, status, ticket_id) VALUES (%s, 'ask', %s, %s)",
        (sid, status, ticket_id),
    )


async def ticket_fks(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """Every foreign key of opencode_sessions: (name, referenced table, validated)."""
    return await fetchall(
        conn,
        "SELECT conname, confrelid::regclass::text, convalidated FROM pg_constraint"
        " WHERE conrelid = 'opencode_sessions'::regclass AND contype = 'f'",
    )


def test_the_shipped_files_are_ordered_and_only_the_fk_file_runs_every_time():
    assert (
        ALL
        == sorted(ALL)
        == [
            "001_opencode_sessions.sql",
            "002_ticket_fk.sql",
            "003_session_requests.sql",
            "004_servers.sql",
            "005_usage.sql",
            "006_backstop_index.sql",
        ]
    )
    assert EVERY_RUN == ["002_ticket_fk.sql"]


def test_the_sql_of_a_wheel_installed_outside_sys_prefix_is_found_where_its_installer_recorded_it(tmp_path):
    """pip install --user or --prefix puts the data-files under that base, not sys.prefix: RECORD says where."""
    site = tmp_path / "base" / "lib" / "python3.11" / "site-packages"
    info = site / "opencode_session_layer-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencode-session-layer\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("../../../share/opencode-session-layer/sql/001_a.sql,,\n")
    installed = tmp_path / "base" / "share" / "opencode-session-layer" / "sql"
    installed.mkdir(parents=True)
    (installed / "001_a.sql").write_text("SELECT 1;\n")
    candidates = sql_dir_candidates(site, tmp_path / "venv")
    assert [c for c in candidates if c.is_dir()] == [installed]
    assert tmp_path / "venv" / "share" / "opencode-session-layer" / "sql" in candidates  # a virtualenv, the image


async def test_migrating_twice_applies_only_the_every_run_file_the_second_time(fresh_database):
    async with await connect(fresh_database) as conn:
        assert await migrate(conn) == ALL
        assert await migrate(conn) == EVERY_RUN
        rows = await fetchall(conn, "SELECT name FROM opencode_schema_migrations ORDER BY name")
        assert [r[0] for r in rows] == ALL
        # the lock is released after each run: another session can take it at once
        async with await connect(fresh_database) as other:
            assert (await fetchall(other, "SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK_ID,)))[0][0] is True
            await other.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_ID,))


async def test_five_replicas_migrating_at_once_create_everything_exactly_once(fresh_database):
    conns = [await connect(fresh_database) for _ in range(5)]
    results: list[list[str]] = []
    go = anyio.Event()
    try:

        async def replica(conn: psycopg.AsyncConnection[Any]) -> None:
            await go.wait()
            results.append(await migrate(conn))

        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(replica, conn)
            await anyio.lowlevel.checkpoint()
            go.set()
    finally:
        for conn in conns:
            await conn.close()

    assert len(results) == 5
    assert sorted(results, key=len, reverse=True) == [ALL] + [EVERY_RUN] * 4  # one replica did the work
    async with await connect(fresh_database) as conn:
        tables = await fetchall(
            conn, "SELECT count(*) FROM pg_class WHERE relname = 'opencode_sessions' AND relkind = 'r'"
        )
        assert tables[0][0] == 1
        recorded = await fetchall(conn, "SELECT name FROM opencode_schema_migrations ORDER BY name")
        assert [r[0] for r in recorded] == ALL


async def test_opencode_sessions_has_exactly_the_host_apps_columns(fresh_database):
    async with await connect(fresh_database) as conn:
        await migrate(conn)
        columns = await fetchall(
            conn,
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_name = 'opencode_sessions' ORDER BY ordinal_position",
        )
        primary_key = await fetchall(
            conn,
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'opencode_sessions'::regclass AND i.indisprimary",
        )
    assert columns == [
        ("id", "character varying", 255, "NO", None),
        ("ticket_id", "character varying", 255, "YES", None),
        ("session_type", "character varying", 50, "NO", None),
        ("status", "character varying", 50, "NO", None),
        ("messages", "jsonb", None, "YES", "'[]'::jsonb"),
        ("metadata", "jsonb", None, "YES", None),
        ("started_at", "timestamp without time zone", None, "NO", "now()"),
        ("completed_at", "timestamp without time zone", None, "YES", None),
        ("error_message", "text", None, "YES", None),
        # issue 17, appended after the host app's columns: sql/004_servers.sql (where the session ran) and
        # sql/005_usage.sql (what it used)
        ("server", "character varying", 64, "YES", None),
        ("directory", "text", None, "YES", None),
        ("tokens_input", "bigint", None, "NO", "0"),
        ("tokens_output", "bigint", None, "NO", "0"),
        ("tokens_reasoning", "bigint", None, "NO", "0"),
        ("tokens_cache_read", "bigint", None, "NO", "0"),
        ("tokens_cache_write", "bigint", None, "NO", "0"),
        ("cost", "numeric", None, "NO", "0"),
        ("steps", "integer", None, "NO", "0"),
    ]
    assert [r[0] for r in primary_key] == ["id"]


async def test_ticket_foreign_key_lands_once_the_tickets_table_exists(fresh_database):
    async with await connect(fresh_database) as conn:
        await migrate(conn)
        assert await ticket_fks(conn) == []
        await insert_row(conn, "a", "x", "T-0")
        try:
            await conn.execute("CREATE TABLE tickets (id varchar(255) PRIMARY KEY)")
            await conn.execute("INSERT INTO tickets (id) VALUES ('T-0'), ('T-1')")
            assert await migrate(conn) == EVERY_RUN
            assert await ticket_fks(conn) == [(FK_NAME, "tickets", True)]
            assert await migrate(conn) == EVERY_RUN
            assert await ticket_fks(conn) == [(FK_NAME, "tickets", True)]  # not added twice
            await insert_row(conn, "b", "x", "T-1")
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                await insert_row(conn, "c", "x", "T-404")
        finally:
            await conn.execute(f"ALTER TABLE opencode_sessions DROP CONSTRAINT IF EXISTS {FK_NAME}")
            await conn.execute("DROP TABLE IF EXISTS tickets")
        assert await ticket_fks(conn) == []


async def test_rows_written_before_tickets_existed_do_not_break_migrate(fresh_database):
    # A standalone install records ticket ids the host app's table, created later, does not have.
    async with await connect(fresh_database) as conn:
        await migrate(conn)
        await insert_row(conn, "a", "completed", "T-old")
        try:
            await conn.execute("CREATE TABLE tickets (id varchar(255) PRIMARY KEY)")
            assert await migrate(conn) == EVERY_RUN
            assert await ticket_fks(conn) == [(FK_NAME, "tickets", False)]  # enforced for new rows only
            assert await migrate(conn) == EVERY_RUN
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                await insert_row(conn, "b", "x", "T-404")
        finally:
            await conn.execute(f"ALTER TABLE opencode_sessions DROP CONSTRAINT IF EXISTS {FK_NAME}")
            await conn.execute("DROP TABLE IF EXISTS tickets")


async def test_a_failing_migration_leaves_nothing_behind_and_releases_the_lock(fresh_database):
    broken = Migration("900_broken.sql", "CREATE TABLE half_done (x int); SELECT 1/0;")
    async with await connect(fresh_database) as conn:
        with pytest.raises(MigrationFailed) as failed:
            await migrate(conn, [broken])
        assert str(failed.value) == "migration 900_broken.sql failed: division by zero"  # one line, naming the file
        assert isinstance(failed.value.__cause__, psycopg.errors.DivisionByZero)
        assert (await fetchall(conn, "SELECT to_regclass('half_done')"))[0][0] is None
        assert await fetchall(conn, "SELECT name FROM opencode_schema_migrations") == []
        async with await connect(fresh_database) as other:
            assert await migrate(other) == ALL  # not blocked by the failed run's lock


async def test_the_usage_migration_computes_old_rows_usage_from_their_stored_messages(fresh_database):
    before_usage = [m for m in load_migrations() if m.name < "005"]
    tokens = {"input": 100, "output": 20, "reasoning": 1, "cache": {"read": 2, "write": 3}}
    messages = [
        {"info": {"id": "msg_1", "role": "user"}, "parts": []},
        {"info": {"id": "msg_2", "role": "assistant", "cost": 0.25, "tokens": tokens}, "parts": []},
        {"info": {"id": "msg_3", "role": "assistant", "cost": 0.5, "tokens": {"input": "x"}}, "parts": []},
    ]
    async with await connect(fresh_database) as conn:
        await migrate(conn, before_usage)
        await insert_row(conn, "old", "completed", "T-1")
        await insert_row(conn, "empty", "completed", "T-1")
        await conn.execute("UPDATE opencode_sessions SET messages = %s WHERE id = 'old'", (Jsonb(messages),))
        await migrate(conn)
        rows = await fetchall(
            conn,
            "SELECT id, tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, tokens_cache_write,"
            " cost, steps FROM opencode_sessions ORDER BY id",
        )
    assert rows == [("empty", 0, 0, 0, 0, 0, 0, 0), ("old", 100, 20, 1, 2, 3, Decimal("0.75"), 2)]
