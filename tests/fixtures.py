"""Fixtures built on the servers of conftest.py: the schema, the simulator, pollers in-process and as processes."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
import psycopg_pool
import pytest
from psycopg import sql
from redis.asyncio import Redis

from poller.worker import Worker
from shared.config import Secret, Settings
from shared.dev.processes import free_port
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store.connections import redis_client
from shared.store.migrate import migrate
from tests.helpers import Child, wait_port

SIM_SPEED = 20.0  # a TOOL run takes well under a second


@pytest.fixture(scope="session")
def schema(database_url: str) -> str:
    """The migrated database, once per test session."""

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate(conn)

    anyio.run(go)
    return database_url


@pytest.fixture
async def db(schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection to an emptied `opencode_sessions`."""
    async with await psycopg.AsyncConnection.connect(schema, autocommit=True) as conn:
        await conn.execute("TRUNCATE opencode_sessions")
        yield conn


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the test server (the session's `schema` is never touched); dropped after."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """The OpenCode simulator in this process (fast runs), on a loopback port."""
    with serve_in_thread(create_simulator(SIM_SPEED, retry_delays=(0.2, 0.2))) as url:
        yield url


@pytest.fixture
async def opencode(simulator_url: str) -> AsyncIterator[OpenCodeClient]:
    async with OpenCodeClient(simulator_url, timeout_s=5) as client:
        yield client


@pytest.fixture
def settings(redis_url: str, schema: str, simulator_url: str) -> Settings:
    return Settings(
        redis_url=Secret(redis_url),
        database_url=Secret(schema),
        opencode_url=simulator_url,
        poll_interval_s=0.05,
        poll_interval_events_s=0.25,
        lease_ttl_s=1.0,
        reconcile_interval_s=0.5,
        opencode_retry_deadline_s=3.0,
        max_sessions_per_poller=100,
        replica_id="test-replica",
    )


@pytest.fixture
async def make_worker(settings: Settings, redis: Redis, db: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process pollers: `await make_worker(**settings_overrides)` returns the running Worker."""
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:

        async def start(**overrides: Any) -> Worker:
            worker_settings = dataclasses.replace(settings, **overrides)
            client = redis_client(worker_settings.redis_url)
            stack.push_async_callback(client.aclose)
            pool = psycopg_pool.AsyncConnectionPool(
                str(worker_settings.database_url), min_size=1, max_size=4, open=False
            )
            await pool.open(wait=False)
            stack.push_async_callback(pool.close)
            oc = OpenCodeClient(
                worker_settings.opencode_url, timeout_s=2.0, max_body_bytes=worker_settings.opencode_max_response_bytes
            )
            stack.push_async_callback(oc.aclose)
            worker = Worker(worker_settings, client, pool, oc)
            tg.start_soon(worker.run)
            return worker

        yield start
        tg.cancel_scope.cancel()


@pytest.fixture
def make_poller(redis_url: str, schema: str) -> Iterator[Callable[..., Child]]:
    """Start `opencode-poller` processes (python -m poller) against the given OpenCode URL."""
    children: list[Child] = []

    def start(opencode_url: str, name: str = "poller", **env: str) -> Child:
        child = Child(
            name,
            "poller",
            [],
            {
                "REDIS_URL": redis_url,
                "DATABASE_URL": schema,
                "OPENCODE_URL": opencode_url,
                "POLL_INTERVAL_MS": "100",
                "LEASE_TTL_MS": "1500",
                "RECONCILE_INTERVAL_MS": "1000",
                "OPENCODE_RETRY_DEADLINE_MS": "5000",
                "POLLER_ID": f"{name}-{len(children)}",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "info",
                **env,
            },
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


@pytest.fixture
def simulator_process() -> Iterator[Callable[..., str]]:
    """An OpenCode simulator in its own process (so it survives a poller's kill -9), at fast speed."""
    children: list[Child] = []

    def start(speed: float = SIM_SPEED, port: int | None = None) -> str:
        port = port or free_port()
        child = Child("simulator", "shared.dev.simulator", ["--port", str(port), "--speed", str(speed)], {})
        wait_port(port, child=child)
        children.append(child)
        return f"http://127.0.0.1:{port}"

    yield start
    for child in children:
        child.kill()  # it keeps nothing: no graceful wait (up to 5 s) for a request a test left hanging
        child.close()


@pytest.fixture
async def make_gateway(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    """Serve the gateway with uvicorn on a loopback port in this event loop: `url = await make_gateway()`."""
    import uvicorn

    from gateway.app import create_app
    from gateway.main import GatewayServer

    servers: list[GatewayServer] = []
    async with anyio.create_task_group() as tg:

        async def start(ping_interval_s: float = 15.0, fanout_queue: int = 1000, **overrides: Any) -> str:
            gateway_settings = dataclasses.replace(settings, **{"gateway_auth": False, **overrides})
            app = create_app(gateway_settings, ping_interval_s=ping_interval_s, fanout_queue=fanout_queue)
            port = free_port()
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_config=None, lifespan="on", timeout_graceful_shutdown=3
            )
            server = GatewayServer(config, app)
            servers.append(server)
            tg.start_soon(server.serve)
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                    await anyio.sleep(0.01)
            return f"http://127.0.0.1:{port}"

        yield start
        for server in servers:
            server.should_exit = True
