"""Fixtures every test shares: a real Redis and a real PostgreSQL for the whole session.

Where they come from, first match wins: TEST_REDIS_URL / TEST_DATABASE_URL, then testcontainers when a Docker
engine answers, then shared.dev.embedded (no Docker, nothing preinstalled). Only embedded servers can be stopped
and restarted, so outage tests ask for `embedded_redis` / `embedded_postgres` and are skipped otherwise.

The suite runs on pytest-xdist workers (`-n auto` in pyproject.toml), a test file to a worker: each worker starts
servers of its own, so tests that flush Redis or empty the table never meet. Given servers are shared, so then
one worker runs everything.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis

from shared.dev.embedded.postgres import PostgresServer, start_postgres
from shared.dev.embedded.redis import RedisServer, start_redis
from shared.nesting import make_room

make_room()  # as every process of ours does at start (shared.entrypoints): in-process pollers and gateways too

REDIS_IMAGE = "redis:7.2-alpine"
POSTGRES_IMAGE = "postgres:18-alpine"
DATABASE = "opencode"

ServerT = TypeVar("ServerT", RedisServer, PostgresServer)


def _resolve_lazy_imports() -> None:
    """anyio imports its parts lazily, on first use, from whichever thread uses them (the simulator's, a
    gateway's); pytest rewrites anyio's modules (a plugin) with ast.parse, which on CPython 3.11.7 fails with
    "SystemError: AST constructor recursion depth mismatch" when two threads parse at once. Import them now.
    So too what schemathesis's pytest-xdist hook imports at the session's end, while a server's thread may run."""
    for module in (anyio, anyio.abc):
        for name in dir(module):
            getattr(module, name)
    for late in ("allure", "html.writer", "junitxml"):
        name = f"schemathesis.reporting.{late}"
        try:
            importlib.import_module(name)
        except ImportError:  # allure needs an extra schemathesis lacks here: a failed import is parsed again each
            sys.modules[name] = None  # time, so it is marked absent, and the hook's import fails at once, as it would


_resolve_lazy_imports()


# The suite mostly waits (on processes, streams, deadlines): two workers halve its wall time on CI's two cores,
# with every timing-sensitive test passing at that load. More is untried, so it is not the default (`-n 4` asks).
WORKERS = 2


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers `-n auto` starts: one when the servers are given (workers would share them)."""
    if os.environ.get("TEST_REDIS_URL") or os.environ.get("TEST_DATABASE_URL"):
        return 1
    return WORKERS


@dataclass(frozen=True)
class Service(Generic[ServerT]):
    """Where a service answers, and the embedded server behind it when we run it ourselves."""

    url: str
    server: ServerT | None = None


@functools.cache
def docker_available(timeout: float = 0.5) -> bool:
    """Ping the Docker engine directly: the docker client would spend seconds retrying when there is none."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(host.removeprefix("unix://"))
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.create_connection((name, int(port)), timeout=timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256).split(b"\r\n", 1)[0]
    except (OSError, ValueError):
        return False


def _skip_unless_embedded(service: Service[ServerT], variable: str) -> ServerT:
    if service.server is None:
        pytest.skip(f"stops and restarts the server, which only works with the embedded one ({variable} or Docker set)")
    return service.server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service[RedisServer]]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield Service(url)
    elif docker_available():
        from testcontainers.community.redis import RedisContainer

        with RedisContainer(REDIS_IMAGE) as container:
            yield Service(f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0")
    else:
        with start_redis() as server:
            yield Service(server.url, server)


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Service[PostgresServer]]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield Service(url)
    elif docker_available():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname=DATABASE) as container:
            yield Service(container.get_connection_url(driver=None))
    else:
        with start_postgres(database=DATABASE) as server:
            yield Service(server.url, server)


@pytest.fixture(scope="session")
def redis_url(redis_service: Service[RedisServer]) -> str:
    return redis_service.url


@pytest.fixture(scope="session")
def database_url(postgres_service: Service[PostgresServer]) -> str:
    return postgres_service.url


@pytest.fixture
def embedded_redis(redis_service: Service[RedisServer]) -> Iterator[RedisServer]:
    """The session's Redis, for tests that stop or kill it; it is running again after the test."""
    server = _skip_unless_embedded(redis_service, "TEST_REDIS_URL")
    yield server
    server.start()


@pytest.fixture
def embedded_postgres(postgres_service: Service[PostgresServer]) -> Iterator[PostgresServer]:
    """The session's PostgreSQL, for tests that stop it; it is running again after the test."""
    server = _skip_unless_embedded(postgres_service, "TEST_DATABASE_URL")
    yield server
    server.start()


@pytest.fixture
async def redis(redis_url: str, anyio_backend: str) -> AsyncIterator[aioredis.Redis]:
    """An empty Redis (FLUSHALL first), bytes in and out."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        await client.flushall()
        yield client
    finally:
        await client.aclose()


pytest_plugins = ["tests.fixtures", "tests.roles"]
