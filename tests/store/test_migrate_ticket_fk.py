"""sql/002_ticket_fk.sql adds the ticket key NOT VALID and commits before validating it: adding holds a lock that
stops every write to opencode_sessions and to the host app's tickets, validating scans the whole archive under one
that does not. A validation cut short is done by the next run; one that finds unknown tickets is tried once."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from shared.store.migrate import Migration, MigrationFailed, load_migrations, migrate, migrate_report
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

FK = "opencode_sessions_ticket_id_fkey"


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def key(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
    """(validated, comment) of the ticket key, or None when there is none."""
    cur = await conn.execute(
        "SELECT convalidated, obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = %s", (FK,)
    )
    return await cur.fetchone()


async def with_tickets(url: str, *ids: str) -> psycopg.AsyncConnection[Any]:
    conn = await connect(url)
    await migrate(conn)
    await conn.execute("CREATE TABLE tickets (id varchar(255) PRIMARY KEY)")
    for ticket in ids:
        await conn.execute("INSERT INTO tickets (id) VALUES (%s)", (ticket,))
    return conn


# Holds the second ALTER TABLE (the validation) at its start while the test holds advisory lock 2002.
HOLD_VALIDATION = """
CREATE SEQUENCE alters;
CREATE FUNCTION hold_second_alter() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('alters') = 2 THEN PERFORM pg_advisory_xact_lock(2002); END IF;
END $$;
CREATE EVENT TRIGGER hold_validation ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION hold_second_alter();
"""


async def test_the_pollers_write_while_the_ticket_key_is_validated(fresh_database):
    async with await with_tickets(fresh_database, "T-1") as conn, await connect(fresh_database) as writer:
        await conn.execute(HOLD_VALIDATION)
        await writer.execute("SELECT pg_advisory_lock(2002)")
        async with anyio.create_task_group() as tg:
            tg.start_soon(migrate, conn)

            async def validation_held() -> bool:
                cur = await writer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND pid = %s",
                    (conn.info.backend_pid,),
                )
                return (await cur.fetchone()) == (1,)

            await wait_for(validation_held, what="the validation held at its start")
            await writer.execute("SET lock_timeout = '10s'")  # adding the key locks writers out till it commits
            await writer.execute(
                "INSERT INTO opencode_sessions (id, session_type, status, ticket_id) VALUES ('a', 'ask', 'x', 'T-1')"
            )
            await writer.execute("SELECT pg_advisory_unlock(2002)")
        assert await key(conn) == (True, None)


async def test_a_key_added_but_not_yet_validated_is_validated_by_the_next_run(fresh_database):
    """The run that added it stopped before validating (a lock timeout, a killed pod)."""
    async with await with_tickets(fresh_database, "T-1") as conn:
        await conn.execute(
            f"ALTER TABLE opencode_sessions ADD CONSTRAINT {FK}"
            " FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID"
        )
        await migrate(conn)
        assert await key(conn) == (True, None)


async def test_rows_older_than_tickets_leave_the_key_not_valid_saying_so_once(fresh_database):
    async with await with_tickets(fresh_database) as conn:
        await conn.execute(
            "INSERT INTO opencode_sessions (id, session_type, status, ticket_id) VALUES ('a', 'ask', 'x', 'T-0')"
        )
        warnings: list[str] = []
        conn.add_notice_handler(lambda n: warnings.append(str(n.message_primary)) if n.severity == "WARNING" else None)
        await migrate(conn)
        await migrate(conn)  # not scanned again: the key's comment says why it is not valid
        validated, comment = await key(conn) or (None, None)
        assert validated is False and "tickets" in str(comment)
        assert warnings == [
            "opencode_sessions has ticket ids missing from tickets: the foreign key checks new rows only"
        ]


async def test_a_file_outside_a_transaction_gives_up_on_a_lock_too(fresh_database):
    alter = Migration("900_x.sql", "-- migrate: no-transaction\nALTER TABLE opencode_sessions ADD COLUMN x int;\n")
    async with await connect(fresh_database) as conn:
        await migrate(conn)
        async with await psycopg.AsyncConnection.connect(fresh_database) as reader:
            await reader.execute("SELECT count(*) FROM opencode_sessions")  # a long transaction holding the table
            with pytest.raises(MigrationFailed, match="waited 2 times 50 ms for a lock"):
                await migrate_report(conn, [*load_migrations(), alter], lock_timeout_ms=50, lock_attempts=2)
        cur = await conn.execute("SHOW lock_timeout")
        assert await cur.fetchone() == ("0",)  # the session's own setting is back
