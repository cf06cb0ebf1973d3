"""Clients for Redis and PostgreSQL, and store_errors(): their failures become Unavailable at the call site."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from shared.config import Secret
from shared.errors import Unavailable

REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_RETRIES = 2
PG_CONNECT_TIMEOUT_S = 5
PG_POOL_TIMEOUT_S = 10.0
# A PostgreSQL that stops answering without closing its connections (a failover's old primary, a network partition)
# held each query for the kernel's retransmissions, ~15 min: an archive write, a gateway's read, a CLI command. With
# these, data left unacknowledged for 30 s, or an idle connection whose keepalives go unanswered for ~30 s, ends the
# connection (an error the caller retries), on a TCP connection (a Unix socket ignores them). A URL's own win.
PG_TCP_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def redis_client(url: Secret | str, *, max_connections: int = 50) -> Redis:
    """A command client; a dropped connection is retried twice before the caller sees Unavailable.

    The pool blocks (up to the socket timeout) rather than failing when every connection is busy, so
    hundreds of session tasks can share a few connections.
    """
    pool = BlockingConnectionPool.from_url(
        str(url),
        max_connections=max_connections,
        timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
        # on the pool's connections: a client given a pool uses the pool's retry, and ignores its own
        retry=Retry(EqualJitterBackoff(cap=0.5, base=0.05), REDIS_RETRIES),  # jittered like shared.backoff
    )
    return Redis(connection_pool=pool, decode_responses=False)


# A statement waiting on a lock another transaction holds (one left open, an ALTER, a VACUUM FULL) waited for as
# long as the lock was held: an archive write, a gateway read, a CLI command, for ever. Bounded, it is an outage its
# caller retries (or reports); a bound the session has already (PGOPTIONS, the role, the database) is kept.
STATEMENT_TIMEOUT_MS = 60_000
_BOUND_STATEMENTS = "SELECT set_config('statement_timeout', %s, false) WHERE current_setting('statement_timeout') = '0'"


async def bound_statements(conn: psycopg.AsyncConnection[Any], timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
    """Give the connection's session a statement timeout of `timeout_ms` unless it has one."""
    with store_errors("PostgreSQL"):
        await conn.execute(_BOUND_STATEMENTS, (f"{timeout_ms}ms",))


def pg_conninfo(url: Secret | str) -> str:
    """The URL with PG_TCP_DEFAULTS for what it does not set itself."""
    given = conninfo_to_dict(str(url))
    return make_conninfo(str(url), **{name: value for name, value in PG_TCP_DEFAULTS.items() if name not in given})


@asynccontextmanager
async def pg_pool(
    url: Secret | str, *, min_size: int = 1, max_size: int = 10
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """An open pool that does not block start-up when PostgreSQL is down: connections are made on demand."""
    pool = psycopg_pool.AsyncConnectionPool(
        pg_conninfo(url),
        min_size=min_size,
        max_size=max_size,
        timeout=PG_POOL_TIMEOUT_S,
        kwargs={"connect_timeout": PG_CONNECT_TIMEOUT_S, "autocommit": True},
        configure=bound_statements,
        open=False,
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()


async def pg_connect(url: Secret | str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    with store_errors("PostgreSQL"):
        return await psycopg.AsyncConnection.connect(
            pg_conninfo(url), connect_timeout=PG_CONNECT_TIMEOUT_S, autocommit=True
        )


@contextmanager
def store_errors(store: str) -> Iterator[None]:
    """Translate Redis and PostgreSQL outages into Unavailable, naming the store: connection failures, and the
    refusals a server makes of every write until an operator acts (out of memory, read-only, unable to persist).
    Was: a Redis at maxmemory raised OutOfMemoryError out of the replica's claim and ended every replica, and in a
    tracker counted against the session."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(f"{store} is unreachable: {_first_line(exc)}") from exc
    except redis.exceptions.BusyLoadingError as exc:
        raise Unavailable(f"{store} is loading its data: {_first_line(exc)}") from exc
    except redis.exceptions.ReadOnlyError as exc:  # a replica, e.g. while a failover promotes another
        raise Unavailable(f"{store} is read-only: {_first_line(exc)}") from exc
    except redis.exceptions.OutOfMemoryError as exc:  # at maxmemory with noeviction: refused until memory is freed
        raise Unavailable(f"{store} is out of memory: {_first_line(exc)}") from exc
    except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as exc:  # MASTERDOWN, TRYAGAIN
        raise Unavailable(f"{store} is unavailable: {_first_line(exc)}") from exc
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith("MISCONF"):  # it cannot persist, and refuses writes until it can
            raise Unavailable(f"{store} refuses writes: {_first_line(exc)}") from exc
        raise  # this command's own error (e.g. NOSCRIPT, a wrong type)
    except psycopg.errors.ProgramLimitExceeded:
        raise  # one statement past a limit (a jsonb value over 255 MB): this write's own failure, not an outage
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise Unavailable(f"{store} is unreachable: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


async def redis_now_ms(redis: Redis) -> int:
    """Redis's clock, the one every replica and backend shares (never this machine's): queue scores, heartbeats, and
    the floors of a lost run's seq and epoch (queueable.past_lost_run) are taken from it."""
    with store_errors("Redis"):
        seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
