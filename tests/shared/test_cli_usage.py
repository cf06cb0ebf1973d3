"""`opencode-sessions usage`, and the usage `show` prints, as processes against real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest

from shared import commands
from shared.store import archive
from shared.usage import Usage
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


async def cli(*args: str, **env: str) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        result = await anyio.run_process([*CLI, *args], env={**os.environ, **env}, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_usage_sums_the_ticket_type_and_days_sessions(make_worker, redis, db, opencode, schema, redis_url):
    await make_worker()
    ids = []
    for ticket, kind, prompt in (("T-a", "ask", "TOOL run echo"), ("T-a", "chat", "ECHO hi"), ("T-b", "ask", "ECHO")):
        state = await commands.enqueue(redis, db, opencode, session_type=kind, ticket_id=ticket, prompt=prompt)
        ids.append(state["sessionId"])

    async def all_archived() -> list[archive.ArchiveRow] | None:
        rows = [await archive.fetch(db, sid) for sid in ids]
        return rows if all(r is not None and not r.unfinished for r in rows) else None

    await wait_for(all_archived, timeout=30, what="three sessions archived")
    used = [Usage.of_messages(await opencode.messages(sid)) for sid in ids]
    env = {"DATABASE_URL": schema, "REDIS_URL": redis_url}

    code, out, err = await cli("usage", "--ticket", "T-a", "--json", **env)
    assert code == 0, err
    assert json.loads(out) == {"sessions": 2, "usage": Usage.total(used[:2]).to_json()}
    code, out, err = await cli("usage", "--type", "ask", "--since", "2000-01-01", "--json", **env)
    assert json.loads(out) == {"sessions": 2, "usage": Usage.total([used[0], used[2]]).to_json()}
    code, out, err = await cli("usage", "--since", "2999-01-01T00:00:00+02:00", "--json", **env)
    assert json.loads(out) == {"sessions": 0, "usage": Usage().to_json()}
    code, out, err = await cli("usage", "--ticket", "T-a", **env)
    assert code == 0, err
    lines = dict(
        line.split(None, 1)
        if not line.startswith(("input", "output", "reasoning", "cache"))
        else (line[:19].strip(), line[19:])
        for line in out.splitlines()
    )
    assert lines["sessions"] == "2" and lines["steps"] == "3" and lines["input tokens"] == "300"

    code, out, err = await cli("show", ids[0], **env)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("usage: 2 steps, tokens 200 input / 40 output")

    code, _, err = await cli("usage", "--since", "yesterday", **env)
    assert code == 2 and "--since 'yesterday'" in err
    for edge in ("0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"):  # in UTC, outside the years: was exit 1
        code, _, err = await cli("usage", "--since", edge, **env)
        assert (code, err) == (2, f"error: --since {edge!r} is not a date (YYYY-MM-DD or an ISO date-time)\n")
    code, _, err = await cli("usage", "--ticket", "bad:id", **env)
    assert code == 2 and "ticket" in err
