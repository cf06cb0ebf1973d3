"""What CLI commands share: settings from the environment, clients opened and closed around one call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from redis.asyncio import Redis

from shared.config import Settings
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers
from shared.store.connections import STATEMENT_TIMEOUT_MS, bound_statements, pg_connect, redis_client

T = TypeVar("T")
CLI_OPENCODE_TIMEOUT_S = 15.0
CLI_STATEMENT_TIMEOUT_MS = STATEMENT_TIMEOUT_MS


@dataclass(slots=True)
class Clients:
    settings: Settings
    redis: Redis
    db: Any
    opencode: OpenCodeClient | None
    servers: OpenCodeServers | None = None  # every configured server, for `enqueue --server/--directory`


@asynccontextmanager
async def clients(*, opencode: bool = False, db: bool = True) -> AsyncIterator[Clients]:
    settings = Settings.from_env()
    redis = redis_client(settings.redis_url, max_connections=4)
    conn = None
    oc = None
    limit = settings.opencode_max_response_bytes
    servers = OpenCodeServers(  # OPENCODE_DIRECTORY: where a session that names none runs, as for the pollers
        settings.servers,
        timeout_s=CLI_OPENCODE_TIMEOUT_S,
        max_connections=4,
        default_directory=settings.opencode_directory,
        max_body_bytes=limit,
    )
    try:
        if opencode:
            server = settings.servers[0]
            oc = OpenCodeClient(
                server.url,
                timeout_s=CLI_OPENCODE_TIMEOUT_S,
                max_connections=4,
                directory=settings.opencode_directory,
                auth=server.auth,
                max_body_bytes=limit,
            )
        if db:
            conn = await pg_connect(settings.database_url)
            # a statement waiting on a lock (a transaction left open on the row or the table, a migration's ALTER)
            # ends, exit 1 saying so (was: the command waited for ever)
            await bound_statements(conn, CLI_STATEMENT_TIMEOUT_MS)
        yield Clients(settings, redis, conn, oc, servers if opencode else None)
    finally:
        await servers.aclose()
        if conn is not None:
            await conn.close()
        if oc is not None:
            await oc.aclose()
        await redis.aclose()


def run(func: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(func)
