"""`enqueue --server/--directory` and the server and directory filters of `history`, as processes."""

from __future__ import annotations

import json
import os
import sys

import anyio
import httpx
import pytest

from shared.store import keys

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


async def cli(*args: str, **env: str) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        result = await anyio.run_process([*CLI, *args], env={**os.environ, **env}, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--server", "nope"], "unknown server 'nope'"),
        (["--directory", "relative/dir"], "directory 'relative/dir' is not an absolute path"),
        (["--directory", ""], "directory '' is not an absolute path"),
    ],
)
async def test_an_unknown_server_or_a_relative_or_empty_directory_is_exit_2_naming_it(args, named, simulator_url):
    servers = f"main=http://127.0.0.1:1,other={simulator_url}"
    code, out, err = await cli("enqueue", "--type", "ask", *args, OPENCODE_SERVERS=servers, REDIS_URL="redis://x:1")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and named in err


async def test_enqueue_runs_where_it_is_told_and_history_filters_by_it(simulator_url, redis, redis_url, schema, db):
    env = {"OPENCODE_SERVERS": f"main=http://127.0.0.1:1,other={simulator_url}", "REDIS_URL": redis_url}
    env["DATABASE_URL"] = schema
    code, out, err = await cli(
        "enqueue", "--type", "ask", "--server", "other", "--directory", "/srv/repo", "--json", **env
    )
    assert code == 0, err
    state = json.loads(out)
    assert (state["server"], state["directory"]) == ("other", "/srv/repo")
    sid = state["sessionId"]
    job = await redis.hgetall(keys.job(sid))
    assert (job[b"server"], job[b"directory"]) == (b"other", b"/srv/repo")
    fields = await redis.hmget(keys.session(sid), ["server", "directory"])
    assert fields == [b"other", b"/srv/repo"]
    cur = await db.execute("SELECT server, directory FROM opencode_sessions WHERE id = %s", (sid,))
    assert await cur.fetchone() == ("other", "/srv/repo")
    await db.execute("UPDATE opencode_sessions SET status = 'completed' WHERE id = %s", (sid,))
    for args, expected in (
        (["--server", "other"], [sid]),
        (["--server", "main"], []),
        (["--directory", "/srv/repo"], [sid]),
        (["--directory", "/srv/repo/"], [sid]),  # was: filtered as typed, and found none
        (["--directory", "/elsewhere"], []),
    ):
        code, out, err = await cli("history", *args, "--json", **env)
        assert code == 0, err
        assert [s["sessionId"] for s in json.loads(out)["sessions"]] == expected, args


@pytest.mark.parametrize("placed", [[], ["--server", "other"]])
async def test_enqueue_without_a_directory_runs_in_opencode_directory(simulator_url, redis_url, schema, placed):
    """OPENCODE_DIRECTORY is where a session that names no directory runs, for enqueue as for the pollers. Was:
    the CLI created it in the server's own directory, and the pollers then looked for it in OPENCODE_DIRECTORY."""
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_DIRECTORY": "/srv/other-repo"}
    env |= (
        {"OPENCODE_SERVERS": f"main={simulator_url},other={simulator_url}"}
        if placed
        else {"OPENCODE_URL": simulator_url}
    )
    code, out, err = await cli("enqueue", "--type", "ask", *placed, **env)
    assert code == 0, err
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        created = (await client.get(f"/session/{out.strip()}", params={"directory": "/srv/other-repo"})).json()
    assert created["directory"] == "/srv/other-repo"
