"""`opencode-sessions status` lists each OpenCode server with its health and the live sessions it holds."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest

from shared import commands
from shared.config import ServerConfig
from shared.opencode.servers import OpenCodeServers

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


async def test_status_shows_each_server_with_its_health_and_sessions(simulator_url, redis, redis_url, db):
    servers = (ServerConfig("up", simulator_url), ServerConfig("down", "http://127.0.0.1:1"))
    placed = OpenCodeServers(servers)
    try:
        for _ in range(2):
            await commands.enqueue(redis, db, placed, session_type="ask", server="up")  # no poller: they stay live
    finally:
        await placed.aclose()
    env = {**os.environ, "REDIS_URL": redis_url, "OPENCODE_SERVERS": f"up={simulator_url},down=http://127.0.0.1:1"}
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, "status", "--json"], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    up, down = json.loads(done.stdout)["servers"]
    assert (up["name"], up["url"], up["healthy"], up["sessions"], up["error"]) == ("up", simulator_url, True, 2, None)
    assert (down["name"], down["healthy"], down["sessions"]) == ("down", False, 0)
    assert "unavailable" in down["error"]
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, "status"], env=env, check=False)
    lines = done.stdout.decode().splitlines()
    assert lines[-3] == "servers  2"
    assert lines[-2].split()[:3] == ["up", simulator_url, "up"] and lines[-2].endswith("2 session(s)")
    assert lines[-1].startswith("  down  http://127.0.0.1:1  down: ") and lines[-1].endswith("0 session(s)")
