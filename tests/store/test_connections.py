"""What counts as a store outage (retried as long as it lasts) and what is one write's own failure."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from shared.dev.processes import free_port
from shared.errors import Unavailable
from shared.store.connections import REDIS_RETRIES, redis_client, store_errors

pytestmark = pytest.mark.anyio


async def test_a_statement_past_a_postgresql_limit_is_its_own_failure_not_an_outage(db):
    await db.execute("CREATE TEMP TABLE limited (v text PRIMARY KEY)")
    too_big = secrets.token_hex(8_000)  # random, so not compressed under the btree row limit (about 2.7 KB)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded), store_errors("PostgreSQL"):
        await db.execute("INSERT INTO limited VALUES (%s)", (too_big,))


async def test_an_unreachable_postgresql_is_an_outage():
    with pytest.raises(Unavailable, match="PostgreSQL is unreachable"), store_errors("PostgreSQL"):
        await psycopg.AsyncConnection.connect(f"postgresql://127.0.0.1:{free_port()}/none", connect_timeout=2)


def test_every_redis_connection_retries_a_dropped_connection():
    """redis-py takes the retry policy of a client built on a pool from the pool: set there, it reaches every
    connection (set on the client alone, connections had none and the first command after a drop failed)."""
    client = redis_client(f"redis://127.0.0.1:{free_port()}")
    connection = client.connection_pool.make_connection()
    assert connection.retry.get_retries() == REDIS_RETRIES
