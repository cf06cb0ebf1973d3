"""`reply` / `answer` / `show` / `status` as a user runs them, against an in-process poller and the simulator."""

from __future__ import annotations

from typing import Any

import pytest

from shared import commands
from shared.store import requests
from tests.helpers import run_cli, single_error_line, wait_for, waiting_entry

pytestmark = pytest.mark.anyio
UNKNOWN_SESSION = "ses_000000000000AAAAAAAAAAAAAA"


async def archived(db: Any, sid: str) -> Any:
    cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
    row = await cur.fetchone()
    return row[0] if row and row[0] not in ("pending", "running") else None


async def test_reply_and_answer_from_the_cli(make_worker, redis, db, opencode, redis_url, schema, simulator_url):
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}
    await make_worker()
    tool = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL x", permission=["bash=ask"])
    question = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="QUESTION pick")
    tsid, qsid = tool["sessionId"], question["sessionId"]
    per, que = (await waiting_entry(redis, tsid))["id"], (await waiting_entry(redis, qsid))["id"]

    shown = await run_cli(["show", tsid], env)
    assert shown.returncode == 0 and f"permission {per}: bash echo hello" in shown.stdout
    assert f"opencode-sessions reply {tsid} {per} --once" in shown.stdout
    listed = await run_cli(["show", qsid], env)
    assert "Which color should the button be? [Red | Blue]" in listed.stdout
    status = await run_cli(["status"], env)
    assert "waiting 2" in status.stdout and "waiting  2 session(s)" in status.stdout

    # bad input and unknown requests: one line, the right exit code, nothing recorded
    single_error_line(await run_cli(["reply", tsid, que, "--once"], env), 1, "no pending request")
    single_error_line(await run_cli(["reply", qsid, que, "--once"], env), 2, "is a question")
    single_error_line(await run_cli(["answer", tsid, per, "--choice", "Red"], env), 2, "is a permission request")
    single_error_line(await run_cli(["answer", qsid, que, "--choice", "Green"], env), 2, "'Green' is not an option")
    single_error_line(await run_cli(["reply", UNKNOWN_SESSION, per, "--once"], env), 1, "no pending request")
    single_error_line(await run_cli(["reply", tsid, "per_x;y", "--once"], env), 2, "request id")
    single_error_line(await run_cli(["reply", tsid, per], env), 2, "--once")
    assert all(row.answer is None for row in await requests.of_session(db, qsid))  # recorded or not: unanswered

    done = await run_cli(["reply", tsid, per, "--reject", "--message", "no shell today", "--by", "alice"], env)
    assert done.returncode == 0 and done.stdout == f"answered {per} of {tsid}\n", done
    single_error_line(await run_cli(["reply", tsid, per, "--once"], env), 1, "already answered by alice")
    assert (await run_cli(["answer", qsid, que, "--choice", "Blue", "--by", "bob"], env)).returncode == 0
    assert await wait_for(lambda: archived(db, tsid), timeout=30) == "completed"
    assert await wait_for(lambda: archived(db, qsid), timeout=30) == "completed"
    [row] = await requests.of_session(db, qsid)
    assert (row.answer, row.answered_by) == ({"answers": [["Blue"]]}, "bob")
    # archived: `show` lists every request with its answer, who gave it and how it ended
    shown = await run_cli(["show", tsid], env)
    assert f"  request   permission {per} (bash): reject by alice [answered]" in shown.stdout.splitlines()
    shown = await run_cli(["show", qsid], env)
    assert f"  request   question {que} (question): Blue by bob [answered]" in shown.stdout.splitlines()
