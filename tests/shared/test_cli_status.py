"""`opencode-sessions status` and `history` as processes, against real Redis, PostgreSQL and pollers."""

from __future__ import annotations

import base64
import json
import os
import sys

import anyio
import pytest

from shared import commands
from shared.dev.processes import free_port
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


async def cli(*args: str, timeout: float = 60, **env: str) -> tuple[int, str, str]:
    with anyio.fail_after(timeout):
        result = await anyio.run_process([*CLI, *args], env={**os.environ, **env}, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_status_shows_a_running_poller_and_the_session_it_holds(
    redis, db, redis_url, make_worker, simulator_process
):
    slow_opencode = simulator_process(speed=1.0)  # a SLOW tool run lasts ~10 s: long enough to look at
    replica = "status-replica"
    await make_worker(opencode_url=slow_opencode, replica_id=replica)
    async with OpenCodeClient(slow_opencode, timeout_s=5) as opencode:
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW TOOL run it")
    sid = state["sessionId"]

    async def held() -> bool:
        raw = await redis.hget(keys.poller(replica), "sessions")
        return raw is not None and sid in json.loads(raw)

    await wait_for(held, timeout=20, what="the replica's heartbeat lists the session")

    code, out, err = await cli("status", "--json", REDIS_URL=redis_url)
    assert code == 0, err
    report = json.loads(out)
    assert report["queue"] == {"total": 1, "due": 0, "leased": 1}
    assert report["live"]["total"] == 1 and set(report["live"]["byStatus"]) <= {"pending", "running"}
    (poller,) = report["pollers"]
    assert poller["replicaId"] == replica and poller["alive"] is True
    assert poller["sessions"] == [sid]
    assert poller["pid"] == os.getpid() and poller["maxSessions"] == 100
    assert 0 <= poller["heartbeatAgeMs"] < 5000

    code, out, err = await cli("status", REDIS_URL=redis_url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "queue    1 job(s): 0 due, 1 leased"
    assert lines[1].startswith("live     1 session(s): ")
    assert lines[2] == "pollers  1 alive"
    assert lines[3].startswith(f"  {replica}  alive  ") and "heartbeat " in lines[3] and "1/100 session(s)" in lines[3]
    assert lines[4].strip() == sid


async def test_status_lists_a_stopped_replica_as_gone_and_an_empty_queue(redis, redis_url):
    seconds, _ = await redis.time()
    await redis.zadd(keys.POLLERS, {"crashed-replica": (seconds - 7200) * 1000})  # its heartbeat hash has expired
    code, out, err = await cli("status", REDIS_URL=redis_url)
    assert code == 0, err
    assert out.splitlines() == [
        "queue    0 job(s): 0 due, 0 leased",
        "live     0 session(s)",
        "pollers  0 alive, 1 gone",
        "  crashed-replica  gone   last heartbeat 2h00m ago",
    ]


async def test_status_redis_unreachable_is_exit_1():
    code, out, err = await cli("status", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert (code, out) == (1, "")
    assert err.startswith("error: Redis is unreachable") and err.count("\n") == 1


async def test_history_lists_a_tickets_archived_sessions_newest_first(redis, db, opencode, schema, make_worker):
    await make_worker()
    ids = []
    for prompt in ("ECHO one", "REJECT two", "TOOL three"):
        state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-hist", prompt=prompt)
        ids.append(state["sessionId"])
        await anyio.sleep(0.01)  # distinct started_at
    await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-other", prompt="ECHO elsewhere")

    async def archived() -> bool:
        cur = await db.execute("SELECT count(*) FROM opencode_sessions WHERE status NOT IN ('pending', 'running')")
        row = await cur.fetchone()
        return row is not None and row[0] == 4

    await wait_for(archived, timeout=30, what="4 archived sessions")

    code, out, err = await cli("history", "--ticket", "T-hist", "--json", DATABASE_URL=schema)
    assert code == 0, err
    page = json.loads(out)
    assert [s["sessionId"] for s in page["sessions"]] == ids[::-1]
    assert [s["status"] for s in page["sessions"]] == ["completed", "error", "completed"]
    assert page["nextCursor"] is None

    code, out, err = await cli("history", "--ticket", "T-hist", DATABASE_URL=schema)
    assert code == 0, err
    lines = out.splitlines()
    # issue 17 added TOKENS (input / output) and COST
    assert lines[0].split() == [
        *("SESSION", "TYPE", "STATUS", "STARTED", "(UTC)", "TOOK", "MSGS", "TOKENS", "COST", "TITLE", "/", "ERROR")
    ]
    assert "200 in / 40 out" in lines[1]  # the TOOL run: two model steps of 100 in / 20 out each
    assert [line.split()[:3] for line in lines[1:]] == [
        [ids[2], "ask", "completed"],
        [ids[1], "ask", "error"],
        [ids[0], "ask", "completed"],
    ]
    assert "Scripted rejection" in lines[2]

    code, out, _ = await cli("history", "--ticket", "T-hist", "--limit", "2", DATABASE_URL=schema)
    assert code == 0
    *rows, more = out.splitlines()
    assert len(rows) == 3 and more.startswith("more: --before ")
    cursor = more.removeprefix("more: --before ")
    code, out, _ = await cli(
        "history", "--ticket", "T-hist", "--limit", "2", "--before", cursor, "--json", DATABASE_URL=schema
    )
    assert code == 0
    assert [s["sessionId"] for s in json.loads(out)["sessions"]] == [ids[0]]

    code, out, _ = await cli("history", "--type", "chat", "--json", DATABASE_URL=schema)
    assert code == 0
    assert [s["ticketId"] for s in json.loads(out)["sessions"]] == ["T-other"]

    code, out, _ = await cli("history", "--ticket", "T-none", DATABASE_URL=schema)
    assert (code, out) == (0, "no archived sessions for ticket T-none\n")


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ticket", "bad id!"], "error: invalid ticket id"),
        (["--ticket", "T-1", "--limit", "0"], "error: Invalid value for '--limit'"),
        (["--ticket", "T-1", "--before", "not-a-cursor"], "error: invalid cursor"),
        # well formed, but of a time no datetime holds (the year 318857; past a C long): was exit 1, unexpected
        (["--before", cursor_of("9999999999999999:ses_0123456789abcdefABCDEF")], "error: invalid cursor"),
        (["--before", cursor_of("99999999999999999999:ses_0123456789abcdefABCDEF")], "error: invalid cursor"),
        (["--before", cursor_of("-62135596800001:ses_0123456789abcdefABCDEF")], "error: invalid cursor"),
        (["--type", "nope"], "error: Invalid value for '--type'"),
    ],
)
async def test_history_bad_input_is_exit_2_without_touching_postgres(args, message):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/opencode"
    code, out, err = await cli("history", *args, DATABASE_URL=unreachable)
    assert (code, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1, err


async def test_history_postgres_unreachable_is_exit_1():
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/opencode"
    code, out, err = await cli("history", "--ticket", "T-1", DATABASE_URL=unreachable)
    assert (code, out) == (1, "")
    assert err.startswith("error: PostgreSQL is unreachable") and err.count("\n") == 1
