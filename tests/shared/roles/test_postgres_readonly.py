"""deploy/postgres-readonly.sql: the gateway's role reads the archive and writes nothing (dropped afterwards)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from psycopg.conninfo import make_conninfo

from tests.roles import ROLE, ROLE_PASSWORD, SQL_FILE, apply_sql


@pytest.fixture
def gateway_db(pg_admin: psycopg.Connection[Any], schema: str) -> Iterator[psycopg.Connection[Any]]:
    apply_sql(pg_admin)
    apply_sql(pg_admin, ROLE_PASSWORD)  # twice: idempotent, and the second run sets the password
    with psycopg.connect(make_conninfo(schema, user=ROLE, password=ROLE_PASSWORD), autocommit=True) as conn:
        yield conn


def public_may_create_in_public(conn: psycopg.Connection[Any]) -> bool:
    """True on PostgreSQL 14 and older (unless fixed): then anyone, the gateway included, may CREATE there."""
    row = conn.execute("SELECT has_schema_privilege('public', 'public', 'CREATE')").fetchone()
    return bool(row and row[0])


def test_gateway_role_reads_the_archive(gateway_db: psycopg.Connection[Any]) -> None:
    assert gateway_db.execute("SELECT current_user").fetchone() == (ROLE,)
    rows = gateway_db.execute("SELECT id, status FROM opencode_sessions WHERE ticket_id = 'T-1'").fetchall()
    assert rows and all(status == "completed" for _, status in rows)
    assert gateway_db.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_privileges_are_exactly_select(pg_admin: psycopg.Connection[Any], gateway_db: psycopg.Connection[Any]) -> None:
    def has(check: str, *args: str) -> bool:
        row = pg_admin.execute(f"SELECT {check}(%s, {', '.join(['%s'] * len(args))})", (ROLE, *args)).fetchone()
        return bool(row and row[0])

    assert has("has_table_privilege", "opencode_sessions", "SELECT")
    for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
        assert not has("has_table_privilege", "opencode_sessions", privilege), privilege
    assert not has("has_table_privilege", "opencode_schema_migrations", "SELECT")
    assert has("has_schema_privilege", "public", "USAGE")
    dbname = pg_admin.info.dbname
    assert has("has_database_privilege", dbname, "CONNECT")
    assert not has("has_database_privilege", dbname, "CREATE")
    attrs = pg_admin.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = %s",
        (ROLE,),
    ).fetchone()
    assert attrs == (True, False, False, False, False, False)


WRITES = [
    "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'pending')",
    "UPDATE opencode_sessions SET status = 'error'",
    "DELETE FROM opencode_sessions",
    "TRUNCATE opencode_sessions",
    "ALTER TABLE opencode_sessions ADD COLUMN x int",
    "DROP TABLE opencode_sessions",
    "CREATE INDEX gateway_idx ON opencode_sessions (status)",
    "CREATE TABLE gateway_table (x int)",
    "CREATE TABLE public.gateway_table (x int)",
    "CREATE SCHEMA gateway_schema",
    "CREATE ROLE gateway_friend",
    "SELECT * FROM opencode_schema_migrations",
    "COPY opencode_sessions (id, session_type, status) FROM STDIN",
]


@pytest.mark.parametrize("statement", WRITES, ids=lambda s: " ".join(s.split()[:3]))
def test_gateway_role_cannot_write(
    pg_admin: psycopg.Connection[Any], gateway_db: psycopg.Connection[Any], statement: str
) -> None:
    """Privileges alone refuse it: the read-only default is turned off first, as a careless client could."""
    if "CREATE TABLE" in statement and public_may_create_in_public(pg_admin):
        pytest.skip("PUBLIC may create in schema public on this server (PostgreSQL 14 or older); the SQL warns")
    gateway_db.execute("SET default_transaction_read_only = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gateway_db.execute(statement)
    assert pg_admin.execute("SELECT count(*) FROM opencode_sessions WHERE status = 'error'").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'p')",
        "CREATE TEMP TABLE t (x int)",
    ],
)
def test_gateway_sessions_are_read_only_by_default(gateway_db: psycopg.Connection[Any], statement: str) -> None:
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        gateway_db.execute(statement)


def test_rerun_takes_back_what_was_added(pg_admin: psycopg.Connection[Any], schema: str) -> None:
    apply_sql(pg_admin)
    pg_admin.execute(f"GRANT INSERT, DELETE ON opencode_sessions TO {ROLE}")
    pg_admin.execute(f"GRANT UPDATE (status) ON opencode_sessions TO {ROLE}")
    pg_admin.execute(f"GRANT SELECT ON opencode_schema_migrations TO {ROLE}")
    pg_admin.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}")
    pg_admin.execute(f"GRANT pg_write_all_data TO {ROLE}")
    pg_admin.execute(f"ALTER ROLE {ROLE} CREATEDB NOLOGIN")
    apply_sql(pg_admin)
    with psycopg.connect(make_conninfo(schema, user=ROLE, password=ROLE_PASSWORD), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'pending')",
            "UPDATE opencode_sessions SET status = 'error'",
            "DELETE FROM opencode_sessions",
            "SELECT * FROM opencode_schema_migrations",
            "CREATE TABLE public.gateway_table (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) >= 1 FROM opencode_sessions").fetchone() == (True,)
    members = pg_admin.execute(
        "SELECT count(*) FROM pg_auth_members WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %s)", (ROLE,)
    ).fetchone()
    assert members == (0,)
    assert pg_admin.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() == (False,)


def test_password_comes_from_the_setting_and_stays(pg_admin: psycopg.Connection[Any]) -> None:
    def password() -> str | None:
        row = pg_admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
        assert row is not None
        return None if row[0] is None else str(row[0])

    apply_sql(pg_admin)
    assert password() is None  # created without one: no password login until someone sets it
    apply_sql(pg_admin, ROLE_PASSWORD)
    first = password()
    assert first is not None and ROLE_PASSWORD not in first  # stored hashed
    assert pg_admin.execute("SELECT current_setting('opencode.gateway_password', true)").fetchone() in (("",), (None,))
    apply_sql(pg_admin)
    assert password() == first  # a re-run without the setting keeps it


def test_psql_variable_route(pg_admin: psycopg.Connection[Any], schema: str) -> None:
    """The header's one-liner: the password from a psql variable, the file unchanged, psql's ON_ERROR_STOP on."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("no psql on PATH")
    script = "SET opencode.gateway_password = :'gateway_password';\n" + SQL_FILE.read_text(encoding="utf-8")
    for _ in range(2):
        result = subprocess.run(
            [psql, schema, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"gateway_password={ROLE_PASSWORD}"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "ERROR" not in result.stderr, result.stderr
    row = pg_admin.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    assert row == (True,)


@pytest.mark.parametrize("placeholder", ["CHANGE-ME-gateway-db-password", "xx-ChangeMe", "changeme"])
def test_a_placeholder_password_is_refused_before_anything_changes(
    pg_admin: psycopg.Connection[Any], placeholder: str
) -> None:
    """The shipped Secret's value would be a password everybody knows; a word that only holds the letters is not."""
    apply_sql(pg_admin, ROLE_PASSWORD)
    before = pg_admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    with pytest.raises(psycopg.errors.RaiseException, match="holds a placeholder"):
        apply_sql(pg_admin, placeholder)
    after = pg_admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    assert after == before
    apply_sql(pg_admin, "exchangemembers-" + ROLE_PASSWORD)  # the marker inside a word: a real password
