"""A migration that needs a lock a long transaction holds waits lock_timeout_ms at a time, not for ever: while it
waits in the lock queue every writer of the table waits behind it. And `migrate` run as a role that may not create
anything fails in one line naming what it could not do."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
import pytest
import structlog
from psycopg import sql

from shared.store.migrate import (
    LOCK_ATTEMPTS,
    LOCK_RETRY_BASE_S,
    LOCK_RETRY_CAP_S,
    LOCK_TIMEOUT_MS,
    MIGRATE_LOCK_ID,
    Migration,
    MigrationFailed,
    load_migrations,
    migrate,
    migrate_report,
)
from tests.deploy.manifests import k8s_one
from tests.helpers import wait_for
from tests.shared.test_cli import cli, one_error

pytestmark = pytest.mark.anyio

BEFORE_004 = [m for m in load_migrations() if m.name < "004"]
FROM_004 = [m.name for m in load_migrations() if m.name >= "004"]


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def long_reader(url: str) -> psycopg.AsyncConnection[Any]:
    """A transaction that read opencode_sessions and stays open (a slow report, a session idle in transaction)."""
    conn = await psycopg.AsyncConnection.connect(url)
    await conn.execute("SELECT count(*) FROM opencode_sessions")
    return conn


async def alter_waiting(probe: psycopg.AsyncConnection[Any]) -> bool:
    cur = await probe.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE opencode_sessions%'"
    )
    return (await cur.fetchone()) == (1,)


async def recorded(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute("SELECT name FROM opencode_schema_migrations ORDER BY name")
    return [str(r[0]) for r in await cur.fetchall()]


async def test_a_migration_behind_a_long_transaction_gives_up_and_lets_the_writers_through(fresh_database):
    failures: list[MigrationFailed] = []
    async with await connect(fresh_database) as conn, await connect(fresh_database) as writer:
        await migrate(conn, BEFORE_004)

        async def give_up() -> None:
            with pytest.raises(MigrationFailed) as failed:
                await migrate_report(conn, lock_timeout_ms=200, lock_attempts=2)
            failures.append(failed.value)

        async with await long_reader(fresh_database) as reader:
            async with anyio.create_task_group() as tg:
                tg.start_soon(give_up)
                await wait_for(lambda: alter_waiting(writer), what="004 waiting for the reader's lock")
                await writer.execute("SET lock_timeout = '20s'")  # a migration that waits for ever holds it past this
                await writer.execute(
                    "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('s', 'ask', 'pending')"
                )
            assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still open
        assert len(failures) == 1
        message = str(failures[0])
        assert message.startswith("migration 004_servers.sql failed: it waited 2 times 200 ms for a lock")
        assert "\n" not in message
        assert await recorded(conn) == [m.name for m in BEFORE_004]  # 004 rolled back, nothing after it ran
        columns = await conn.execute("SELECT count(*) FROM information_schema.columns WHERE column_name = 'server'")
        assert await columns.fetchone() == (0,)


async def test_a_migration_tries_again_and_applies_once_the_long_transaction_ends(fresh_database):
    async with await connect(fresh_database) as conn:
        await migrate(conn, BEFORE_004)
        reports = []

        async def apply() -> None:
            reports.append(await migrate_report(conn, lock_timeout_ms=100, lock_attempts=1000))

        with structlog.testing.capture_logs() as logs:
            async with await long_reader(fresh_database) as reader, anyio.create_task_group() as tg:
                tg.start_soon(apply)

                async def timed_out() -> bool:
                    return any(e["event"] == "migration_lock_timeout" for e in logs)

                await wait_for(timed_out, what="a lock timeout of 004")
                await reader.rollback()
        assert [r.applied for r in reports] == [FROM_004]
        assert await recorded(conn) == [m.name for m in load_migrations()]


async def test_a_role_that_may_not_create_fails_in_one_line_naming_what(fresh_database):
    role = f"nocreate_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    parts = urlsplit(fresh_database)
    as_role = parts._replace(netloc=f"{role}:{password}@{parts.netloc.rpartition('@')[2]}").geturl()
    async with await connect(fresh_database) as admin:
        await admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        try:
            await admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            line = one_error(await cli(["migrate"], {"DATABASE_URL": as_role}), 1)
            assert line == "error: cannot create opencode_schema_migrations: permission denied for schema public"
            assert password not in line
        finally:
            await admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_a_migrate_waiting_for_another_says_which_backend_holds_the_lock(fresh_database):
    async with await connect(fresh_database) as conn, await connect(fresh_database) as other:
        await other.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_ID,))
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(migrate, conn)

                async def warned() -> list[Any]:
                    return [e["holder_pid"] for e in logs if e["event"] == "migration_lock_wait"]

                assert await wait_for(warned, what="the lock-wait warning") == [other.info.backend_pid]
                assert await recorded_or_none(conn) is None  # nothing done while it waits
                await other.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_ID,))
        assert await recorded(conn) == [m.name for m in load_migrations()]


async def recorded_or_none(conn: psycopg.AsyncConnection[Any]) -> list[str] | None:
    cur = await conn.execute("SELECT to_regclass('opencode_schema_migrations')")
    return None if (await cur.fetchone()) == (None,) else await recorded(conn)


async def test_a_misspelt_directive_stops_migrate_before_anything_runs(fresh_database):
    misspelt = Migration("900_index.sql", "-- migrate: no-transactions\nCREATE TABLE half_done (x int);\n")
    async with await connect(fresh_database) as conn:
        with pytest.raises(MigrationFailed) as failed:
            await migrate(conn, [*load_migrations(), misspelt])
        assert str(failed.value) == "migration 900_index.sql: unknown `-- migrate: no-transactions`"
        assert await recorded_or_none(conn) is None


def test_the_migrate_job_lets_every_try_of_every_pod_restart_run_out():
    """Each run gives up on a lock after its tries and the Job restarts it: the deadline must not cut them short."""
    pauses = sum(min(LOCK_RETRY_CAP_S, LOCK_RETRY_BASE_S * 2**i) for i in range(LOCK_ATTEMPTS - 1))
    one_run_s = LOCK_ATTEMPTS * LOCK_TIMEOUT_MS / 1000 + pauses
    job = k8s_one("Job", "opencode-migrate")["spec"]
    assert job["activeDeadlineSeconds"] >= (job["backoffLimit"] + 1) * one_run_s
