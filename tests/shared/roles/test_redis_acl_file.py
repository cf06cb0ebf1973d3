"""deploy/redis-acl.conf loads into a real server both ways the file documents: `include` and `aclfile`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis as sync_redis
import redis.exceptions

from shared.dev.embedded.redis import find_redis_binary
from shared.dev.embedded.server import EmbeddedServerError
from shared.dev.processes import free_port
from tests.roles import (
    ACL_FILE,
    GATEWAY,
    POLLER,
)


@pytest.fixture
def redis_binary() -> Path:
    try:
        return find_redis_binary()
    except EmbeddedServerError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("mode", ["include", "aclfile"])
def test_file_loads_as_documented(redis_binary: Path, tmp_path: Path, mode: str) -> None:
    """Both ways the header describes: the file itself (comments and all) as config, or its `user` lines as aclfile."""
    port = free_port()
    argv = [str(redis_binary)]
    if mode == "include":
        config = tmp_path / "redis.conf"
        config.write_text(f"include {ACL_FILE}\n", encoding="utf-8")
        argv.append(str(config))
    else:
        users = tmp_path / "users.acl"
        lines = [line for line in ACL_FILE.read_text(encoding="utf-8").splitlines() if line.startswith("user ")]
        users.write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv += ["--aclfile", str(users)]
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--appendonly", "no"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client = sync_redis.Redis(port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"the server refused the file:\n{log.read_text(errors='replace')}"
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.05)

        def dry_run(user: str, *command: str) -> bytes:
            return bytes(client.execute_command("ACL", "DRYRUN", user, *command))  # type: ignore[no-untyped-call]

        users = client.execute_command("ACL", "USERS")  # type: ignore[no-untyped-call]
        assert {u.decode() for u in users} >= {GATEWAY, POLLER}
        assert dry_run(GATEWAY, "HGETALL", "opencode:session:x") == b"OK"
        assert dry_run(GATEWAY, "SUBSCRIBE", "opencode:updates:x") == b"OK"
        assert dry_run(GATEWAY, "HSET", "opencode:session:x", "a", "b") != b"OK"
        assert dry_run(GATEWAY, "GET", "other:x") != b"OK"
        assert dry_run(POLLER, "EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "opencode:x") == b"OK"
        assert dry_run(POLLER, "HSET", "opencode:session:x", "a", "b") == b"OK"
        assert dry_run(POLLER, "FLUSHALL") != b"OK"
        assert dry_run(POLLER, "SET", "other:x", "1") != b"OK"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
