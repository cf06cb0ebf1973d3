"""The read-only users and role of deploy/ (redis-acl.conf, postgres-readonly.sql) on the test servers.

A pytest plugin (see conftest.py): the fixtures `acl` and `pg_admin`, and the helpers tests need to log in as those
users. The Redis users come from the file's own `user` lines, test passwords substituted, and are deleted
afterwards; the PostgreSQL role is dropped before and after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shared.ids import SessionId

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ACL_FILE = DEPLOY / "redis-acl.conf"
SQL_FILE = DEPLOY / "postgres-readonly.sql"
GATEWAY, POLLER = "opencode-gateway", "opencode-poller"
PASSWORDS = {GATEWAY: f"gw-{uuid.uuid4().hex}", POLLER: f"po-{uuid.uuid4().hex}"}
SESSION = SessionId("ses_1a2b3c4d5e6fABCDEFGHIJklmn")
ROLE = "opencode_gateway"
ROLE_PASSWORD = f"pg-{uuid.uuid4().hex}"


# --- Redis -------------------------------------------------------------------------------------------------------


def acl_users() -> dict[str, list[str]]:
    """The file's `user NAME RULES…` lines, as `ACL SETUSER NAME RULES…` would take them."""
    users: dict[str, list[str]] = {}
    for line in ACL_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("user "):
            name, *rules = line.split()[1:]
            users[name] = rules
    return users


def with_test_password(name: str, rules: list[str]) -> list[str]:
    return [f">{PASSWORDS[name]}" if rule.startswith(">CHANGE-ME") else rule for rule in rules]


def user_url(redis_url: str, name: str) -> str:
    parts = urlsplit(redis_url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{quote(name, safe='')}:{quote(PASSWORDS[name], safe='')}@{host}").geturl()


async def run_command(client: Redis, *args: str) -> Any:
    """execute_command, typed: redis-py leaves it unannotated."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def close(pubsub: PubSub) -> None:
    await pubsub.aclose()


async def acl_denials(admin: Redis) -> list[dict[Any, Any]]:
    return [
        entry
        for entry in await run_command(admin, "ACL", "LOG")
        if entry[b"username"] in (b"opencode-gateway", b"opencode-poller")
    ]


@pytest.fixture
async def acl(redis: Redis) -> AsyncIterator[Redis]:
    """The file's users applied to the (emptied) test Redis; yields the admin client. ACL DELUSER afterwards."""
    users = acl_users()
    try:
        for name, rules in users.items():
            await run_command(redis, "ACL", "SETUSER", name, *with_test_password(name, rules))
        await run_command(redis, "ACL", "LOG", "RESET")
        await redis.set("opencode:x", "original")
        await redis.set("other:secret", "not yours")
        yield redis
    finally:
        await run_command(redis, "ACL", "DELUSER", *users)


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def drop_role(conn: psycopg.Connection[Any]) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
        conn.execute(f"DROP OWNED BY {ROLE}")  # its grants, here and on the database
        conn.execute(f"DROP ROLE {ROLE}")


def apply_sql(conn: psycopg.Connection[Any], password: str | None = None) -> None:
    if password is not None:
        conn.execute(sql.SQL("SET opencode.gateway_password = {}").format(sql.Literal(password)))
    conn.execute(SQL_FILE.read_text(encoding="utf-8").encode())


@pytest.fixture
def pg_admin(schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection with no opencode_gateway role around, before or after; one archived row to read in an
    otherwise emptied `opencode_sessions` (whatever earlier tests left there must not count)."""
    with psycopg.connect(schema, autocommit=True) as conn:
        drop_role(conn)
        conn.execute("TRUNCATE opencode_sessions")
        row_id = f"ses_{uuid.uuid4().hex[:26]}"
        conn.execute(
            "INSERT INTO opencode_sessions (id, ticket_id, session_type, status)"
            " VALUES (%s, 'T-1', 'ask', 'completed')",
            (row_id,),
        )
        try:
            yield conn
        finally:
            conn.execute("DELETE FROM opencode_sessions WHERE id = %s", (row_id,))
            drop_role(conn)
