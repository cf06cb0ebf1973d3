"""Commands other than `watch` given contradictory options, empty values, servers that are not what they should be,
and stored fields that hold line breaks: each is a clear error or prints one line per field, as a user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.cli.pending import answered_lines
from shared.cli.render import header
from shared.clock import now_ms
from shared.dev.simulator.server import serve_in_thread
from shared.ids import SessionId
from shared.store import archive
from shared.store.live import LiveState
from tests.helpers import CLI_COMMAND, run_cli, single_error_line

pytestmark = pytest.mark.anyio

SID = "ses_000000000000REVIEWCOMMAND"
NOWHERE = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://x@127.0.0.1:1/db"}
FORGED = "1.0\nlive     99 session(s)\x1b[2J"  # a line break would print a line that looks like ours


@pytest.mark.parametrize(
    "flags",
    [["--reject", "--once"], ["--once", "--always"], ["--always", "--reject"], ["--once", "--always", "--reject"]],
)
async def test_reply_takes_exactly_one_reply(flags: list[str]) -> None:
    """Was: the flag given last won, so `--reject --once` allowed the call the user also said to refuse."""
    result = await run_cli(["reply", SID, "per_abc", *flags], NOWHERE)
    line = single_error_line(result, 2, "exactly one of --once, --always or --reject")
    assert all(flag in line for flag in flags)


async def test_reply_without_a_reply_is_still_exit_2() -> None:
    """None of the three is a usage error as before, now worded as the check for several."""
    single_error_line(await run_cli(["reply", SID, "per_abc"], NOWHERE), 2, "exactly one of --once")


async def cli_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    done = await anyio.run_process([*CLI_COMMAND, *args], cwd=cwd, env=env, check=False)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize("extra", [[], ["--env"]], ids=["start", "env"])
@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
async def test_dev_refuses_an_empty_data_dir_and_writes_nothing(tmp_path: Path, value: str, extra: list[str]) -> None:
    """Was: `--data-dir ""` (an unset variable) was the current directory: dev started there, writing Redis's and
    PostgreSQL's data, its lock and an env file holding the passwords into whatever directory the user was in."""
    result = await cli_in(tmp_path, "dev", "--data-dir", value, *extra)
    single_error_line(result, 2, "--data-dir is empty")
    assert [path async for path in anyio.Path(tmp_path).iterdir()] == []


async def test_metadata_from_an_at_sign_alone_names_no_file() -> None:
    """Was: `@` read the current directory: `cannot read --metadata from '': Is a directory`."""
    result = await run_cli(["enqueue", "--type", "ask", "--prompt", "hi", "--metadata", "@"], NOWHERE)
    single_error_line(result, 2, "--metadata @ names no file")


def no_routes() -> Starlette:
    """Another service on OpenCode's port: every path is a 404, its body no OpenCode error."""
    return Starlette(routes=[])


async def test_enqueue_on_a_server_that_is_not_opencode_says_so(redis_url: str, schema: str, db: Any) -> None:
    """Was: `error: 'Not Found'`: the body alone, naming neither OpenCode, the URL nor the call."""
    with serve_in_thread(no_routes()) as url:
        env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": url}
        result = await run_cli(["enqueue", "--type", "ask", "--prompt", "hi"], env)
    single_error_line(result, 1, f"OpenCode at {url}", "POST /session", "404", "is it an OpenCode server")


def health_saying(version: Any) -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"healthy": True, "version": version})

    return Starlette(routes=[Route("/global/health", health)])


async def test_status_prints_each_server_on_one_line(redis_url: str, redis: Any) -> None:
    """Was: a version holding a line break printed a second line that read like the CLI's own (`live 99 …`), and a
    server without /global/health was `down: 'Not Found'`."""
    with serve_in_thread(health_saying(FORGED)) as odd, serve_in_thread(no_routes()) as other:
        env = {"REDIS_URL": redis_url, "OPENCODE_SERVERS": f"odd={odd},other={other}"}
        result = await run_cli(["status"], env)
    assert (result.returncode, result.stderr) == (0, ""), result
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("live")] == ["live     0 session(s)"]
    assert f"  odd  {odd}  up 1.0 live 99 session(s)\\x1b[2J  0 session(s)" in lines
    assert f"  other  {other}  down: GET /global/health answered 404: 'Not Found'  0 session(s)" in lines


async def archive_odd_row(db: Any, sid: SessionId) -> None:
    """An ended session whose type another backend wrote with a line break (the column takes any text)."""
    state = LiveState(session_id=sid, session_type="ask", status="running", started_at=now_ms())
    now = now_ms()
    assert await archive.upsert_fenced(db, state, 1, status="completed", completed_ms=now, now_ms=now)
    async with db.transaction():
        await db.execute("UPDATE opencode_sessions SET session_type = %s WHERE id = %s", ("ask\r\nforged", sid))


async def test_history_and_show_print_each_stored_field_on_its_line(redis_url: str, schema: str, db: Any) -> None:
    """Was: a type holding a line break split its history row, and the header of `show`, in two."""
    sid = SessionId(SID)
    await archive_odd_row(db, sid)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema}
    listed = await run_cli(["history"], env)
    assert (listed.returncode, listed.stderr) == (0, ""), listed
    assert len(listed.stdout.splitlines()) == 2  # the header row and the session's
    assert listed.stdout.splitlines()[1].startswith(f"{SID}  ask forged  completed  ")
    shown = await run_cli(["show", SID], env)
    assert (shown.returncode, shown.stderr) == (0, ""), shown
    assert shown.stdout.splitlines()[0] == f"{SID}  completed  (archived, ask forged)"


def test_a_header_and_a_request_line_keep_odd_values_on_their_line() -> None:
    """Was: a ticket id or a request id (OpenCode's, recorded as given) with a line break started a line of its own."""
    session = {"sessionId": SID, "status": "run\nning", "live": True, "sessionType": "a\nsk", "ticketId": "T\n1"}
    assert header(session) == f"{SID}  run ning  (live, a sk, ticket T 1)"
    request = {"kind": "permission", "id": "per_1\nforged", "permission": "bash", "outcome": "gone\nx"}
    assert answered_lines([request]) == ["  request   permission per_1 forged (bash): - [gone x]"]
