"""shared.dev.embedded runs real servers; these pin down what the rest of the suite (and `dev`) relies on."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import psycopg
import pytest
import redis.asyncio as aioredis
from redis import ConnectionError as RedisConnectionError
from redis import Redis

from shared.dev.embedded.postgres import PostgresServer, start_postgres
from shared.dev.embedded.redis import RedisServer, start_redis
from shared.dev.embedded.server import EmbeddedServerError


def _alive(pid: int) -> bool:
    """A zombie counts as dead: whoever reaps orphans here may be slow or absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _get(url: str, key: str) -> bytes | None:
    with Redis.from_url(url, socket_timeout=5) as client:
        value = client.get(key)
    assert value is None or isinstance(value, bytes)
    return value


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data dir PostgreSQL can reach even when, under root, it runs as another user (tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="opencode-test-"))
    base.chmod(0o755)
    yield base / "data"
    shutil.rmtree(base)


# --- Redis ---------------------------------------------------------------------------------------------------------


def test_redis_answers_on_loopback_and_cleans_up_its_temp_dir() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with Redis.from_url(server.url) as client:
            assert client.ping() is True
        assert server.is_running()
    assert not server.is_running()
    assert not server.data_dir.exists()


@pytest.mark.anyio
async def test_redis_runs_lua(redis: aioredis.Redis) -> None:
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[2])"
    assert await redis.eval(script, 2, "k", "n", "v", "5") == 5
    assert await redis.get("k") == b"v"


@pytest.mark.anyio
async def test_redis_delivers_pubsub_messages(redis: aioredis.Redis, redis_url: str) -> None:
    async with redis.pubsub() as pubsub, aioredis.Redis.from_url(redis_url) as publisher:
        await pubsub.subscribe("chan")
        with anyio.fail_after(5):
            while await pubsub.get_message(timeout=1) is None:  # the subscribe confirmation
                pass
            assert await publisher.publish("chan", b"hello") == 1
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message["data"] == b"hello"


def test_redis_restart_and_crash_keep_port_and_persisted_data(tmp_path: Path) -> None:
    with start_redis(tmp_path, persist=True) as server:
        port = server.port
        with Redis.from_url(server.url) as client:
            client.set("k", "v")

        server.restart()
        assert server.port == port
        assert _get(server.url, "k") == b"v"

        with Redis.from_url(server.url) as client:
            client.set("k", "after-restart")
        server.kill()
        assert not server.is_running()
        with pytest.raises(RedisConnectionError):
            _get(server.url, "k")

        server.start()
        assert server.port == port
        assert _get(server.url, "k") == b"after-restart"
    assert (tmp_path / "appendonlydir").is_dir(), "a caller's data dir is kept"


def test_redis_without_persist_comes_back_empty() -> None:
    with start_redis() as server:
        with Redis.from_url(server.url) as client:
            client.set("k", "v")
        server.restart()
        assert _get(server.url, "k") is None


def test_redis_reuses_a_persistent_data_dir(tmp_path: Path) -> None:
    with start_redis(tmp_path, persist=True) as first, Redis.from_url(first.url) as client:
        client.set("k", "v")
    with start_redis(tmp_path, persist=True) as second:
        assert _get(second.url, "k") == b"v"


def test_redis_startup_failure_shows_the_server_log() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = RedisServer(port=busy.getsockname()[1])
        try:
            with pytest.raises(EmbeddedServerError, match="already in use"):
                server.start(timeout=10)
            assert not server.is_running()
        finally:
            server.close()


def test_redis_refuses_a_port_another_redis_answers_on() -> None:
    with start_redis() as other:
        server = RedisServer(port=other.port)
        try:
            with pytest.raises(EmbeddedServerError, match=r"already in use|answered by another Redis"):
                server.start(timeout=10)
        finally:
            server.close()
        assert other.is_running()


def test_servers_die_with_their_parent() -> None:
    code = (
        "import sys, time\n"
        "from shared.dev.embedded.redis import start_redis\n"
        "server = start_redis()\n"
        "print(server.pid, server.data_dir, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    with parent, parent.stdout:
        pid_text, _, data_dir = parent.stdout.readline().strip().partition(" ")
        parent.kill()  # no atexit, no cleanup: only PR_SET_PDEATHSIG can stop the server now
    try:
        assert _wait_dead(int(pid_text)), "the server outlived its parent"
    finally:
        if _alive(int(pid_text)):
            os.kill(int(pid_text), signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_server_started_in_a_worker_thread_outlives_the_thread() -> None:
    with ThreadPoolExecutor(1) as pool:
        server = pool.submit(start_redis).result()
    try:  # the worker thread is gone now; the death signal must not have followed it
        time.sleep(0.3)
        assert server.is_running()
        with Redis.from_url(server.url) as client:
            assert client.ping() is True
    finally:
        server.close()


# --- PostgreSQL ----------------------------------------------------------------------------------------------------


def test_postgres_accepts_queries_in_its_database() -> None:
    with PostgresServer() as server:
        assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/opencode"
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_database(), current_user, 1 + 1").fetchone() == (
                "opencode",
                "postgres",
                2,
            )
        if os.geteuid() == 0:
            assert server.pgdata.stat().st_uid != 0, "PostgreSQL must not run as root"
    assert not server.is_running()
    assert not server.data_dir.exists()


def test_postgres_outage_then_recovery_on_the_same_port_with_data() -> None:
    with start_postgres() as server:
        port = server.port
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("INSERT INTO t VALUES ('kept')")
        held = psycopg.connect(server.url, autocommit=True)

        server.stop()
        assert not server.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url, connect_timeout=2).close()
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # fast shutdown cut the open connection
        held.close()

        server.start()
        assert server.port == port
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]


def test_postgres_reuses_its_data_dir(data_dir: Path) -> None:
    with start_postgres(data_dir) as first, psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('kept')")
    assert (data_dir / "pgdata" / "PG_VERSION").is_file()

    with start_postgres(data_dir, database="other") as second:
        with psycopg.connect(second.url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("other",)
        with psycopg.connect(second.url.rpartition("/")[0] + "/opencode") as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]
    assert data_dir.is_dir(), "a caller's data dir is kept"
