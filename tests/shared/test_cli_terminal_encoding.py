"""The CLI on a terminal that is not UTF-8 (a latin-1 or cp1252 locale, `PYTHONIOENCODING`): session content
holds characters that encoding has no byte for. Text for people shows each as its escape, as it shows a control
character; JSON stays valid JSON holding the same characters. Was: `error: unexpected UnicodeEncodeError`, exit 1,
after half the output."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import anyio
import pytest

from shared.clock import now_ms
from shared.dev.simulator.server import serve_in_thread
from shared.ids import SessionId
from shared.models import dumps
from shared.sessions import get_session
from shared.store import archive, keys
from shared.store.live import LiveState
from tests.helpers import CLI_COMMAND, sse_event, two_connection_gateway

pytestmark = pytest.mark.anyio

SID = SessionId("ses_00000000000000000ENCODING")
MESSAGE = "msg_00000000000000000000000001"
TEXT = "caf\u00e9 \u2603 \U0001f600 \u202e end"  # latin-1 has the é; not the snowman, the emoji or the bidi override
SHOWN = "caf\u00e9 \\u2603 \\U0001f600 \\u202e end"  # as a latin-1 terminal shows it: the é itself


def messages() -> list[dict[str, Any]]:
    part = {"id": "prt_1", "messageID": MESSAGE, "type": "text", "text": TEXT}
    return [{"info": {"id": MESSAGE, "role": "user"}, "parts": [part]}]


def live_state() -> LiveState:
    return LiveState(session_id=SID, session_type="ask", status="running", title=TEXT, started_at=now_ms())


async def write_live(redis: Any) -> None:
    await redis.hset(keys.session(SID), mapping=live_state().encode() | {"seq": "3", "updatedAt": str(now_ms())})
    for message in messages():
        await redis.hset(keys.session_messages(SID), MESSAGE, dumps(message["info"]))
        for part in message["parts"]:
            await redis.hset(keys.session_parts(SID), f"{MESSAGE}/{part['id']}", dumps(part))


async def archive_it(redis: Any, db: Any) -> None:
    now = now_ms()
    assert await archive.upsert_fenced(
        db, live_state(), 1, status="completed", messages=messages(), error=None, completed_ms=now, now_ms=now
    )
    await redis.delete(*keys.state_keys(SID))


async def run_in(encoding: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI writing to a terminal of `encoding`; its output read back in that encoding."""
    child_env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")} | env
    child_env["PYTHONIOENCODING"] = encoding
    result = await anyio.run_process([*CLI_COMMAND, *args], env=child_env, check=False)
    out, err = result.stdout.decode(encoding), result.stderr.decode(encoding)
    return subprocess.CompletedProcess(result.args, result.returncode, out, err)


@pytest.fixture
def env(redis_url: str, schema: str, redis: Any, db: Any) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": schema}


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
async def test_show_and_history_write_what_the_terminal_cannot_show_as_escapes(env, redis, db, encoding):
    await write_live(redis)
    shown = await run_in(encoding, ["show", SID], env)
    assert (shown.returncode, shown.stderr) == (0, ""), shown
    assert shown.stdout.splitlines()[1] == f"  user      text: {SHOWN}"
    exact = await run_in(encoding, ["show", SID, "--json"], env)
    assert (exact.returncode, exact.stderr) == (0, ""), exact
    assert json.loads(exact.stdout) == await get_session(redis, db, SID)  # the same characters, as JSON escapes

    await archive_it(redis, db)
    listed = await run_in(encoding, ["history"], env)
    assert (listed.returncode, listed.stderr) == (0, ""), listed
    assert listed.stdout.splitlines()[1].endswith(SHOWN)
    page = await run_in(encoding, ["history", "--json"], env)
    assert (page.returncode, page.stderr) == (0, ""), page
    assert json.loads(page.stdout)["sessions"][0]["title"] == TEXT


async def test_watch_writes_text_as_escapes_and_json_lines_that_parse(env, redis, db):
    await write_live(redis)
    live = await get_session(redis, db, SID)
    await archive_it(redis, db)
    final = await get_session(redis, db, SID)
    frames = [sse_event("snapshot", live, 3), sse_event("complete", final, 4)]
    with serve_in_thread(two_connection_gateway([], frames, frames)) as url:
        watched = await run_in("latin-1", ["watch", SID], env | {"GATEWAY_URL": url})
        as_json = await run_in("latin-1", ["watch", SID, "--json"], env | {"GATEWAY_URL": url})
    assert (watched.returncode, watched.stderr) == (0, ""), watched
    assert f"  user      text: {SHOWN}" in watched.stdout.splitlines()
    assert (as_json.returncode, as_json.stderr) == (0, ""), as_json
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(e["event"], e["data"]) for e in events] == [("snapshot", live), ("complete", final)]
