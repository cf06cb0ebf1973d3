"""What counts as a store outage (retried as long as it lasts) and what is one write's own failure."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from redis import exceptions as redis_exceptions

from shared.dev.processes import free_port
from shared.errors import Unavailable
from shared.store.connections import (
    PG_TCP_DEFAULTS,
    REDIS_RETRIES,
    pg_connect,
    pg_conninfo,
    pg_pool,
    redis_client,
    store_errors,
)

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


async def test_a_redis_that_refuses_every_write_is_an_outage(redis):
    """At maxmemory with noeviction Redis refuses writes (OOM) until memory is freed, and one that cannot persist
    refuses them too (MISCONF): outages to wait out, not a write's own failure. Was: OutOfMemoryError ended
    every replica (from its claim) and counted against the sessions it held."""
    await redis.set("filler", "x" * 200_000)
    used = int((await redis.info("memory"))["used_memory"])
    limit = (await redis.config_get("maxmemory"))["maxmemory"]
    policy = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", str(used - 100_000))
    try:
        with (
            pytest.raises(Unavailable, match=r"^Redis is out of memory: command not allowed when used memory"),
            store_errors("Redis"),
        ):
            await redis.set("more", "y")
        with pytest.raises(Unavailable, match=r"^Redis is out of memory"), store_errors("Redis"):
            await redis.eval("return redis.call('SET', KEYS[1], 'z')", 1, "in-a-script")
    finally:
        await redis.config_set("maxmemory", limit)
        await redis.config_set("maxmemory-policy", policy)
    with store_errors("Redis"):
        assert await redis.set("more", "y")  # memory freed: writes go through again
    with pytest.raises(redis_exceptions.ResponseError, match=r"^unknown command"), store_errors("Redis"):
        await redis.execute_command("NOSUCHCOMMAND")  # a command's own error stays its own


async def test_postgresql_connections_end_when_the_server_stops_answering_unless_the_url_says_otherwise(schema):
    """A PostgreSQL that stops answering without closing (a failover's old primary) held each query for ~15 min
    of TCP retransmissions. Every connection of ours asks the kernel to give up after 30 s unanswered; a URL that
    sets one of these keeps its own."""
    async with await pg_connect(schema) as conn:  # libpq takes them: the connection is made with them
        params = conn.info.get_parameters()
    assert {name: params.get(name) for name in PG_TCP_DEFAULTS} == PG_TCP_DEFAULTS
    own = conninfo_to_dict(pg_conninfo(f"{schema}{'&' if '?' in schema else '?'}tcp_user_timeout=5000"))
    assert own["tcp_user_timeout"] == "5000" and own["keepalives_idle"] == "15"


async def test_pool_connections_bound_their_statements_unless_the_url_does(schema):
    """A statement waiting on a lock another transaction holds waited for as long as it was held (an archive write,
    a gateway read): every pool connection now gives up after STATEMENT_TIMEOUT_MS; a bound of its own is kept."""
    options = f"{'&' if '?' in schema else '?'}options=-c%20statement_timeout%3D5s"
    for url, expected in ((schema, "1min"), (schema + options, "5s")):  # PostgreSQL shows 60000ms so
        async with pg_pool(url) as pool, pool.connection() as conn:
            cur = await conn.execute("SHOW statement_timeout")
            assert (await cur.fetchone()) == (expected,)
