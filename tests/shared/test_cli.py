"""`opencode-sessions` as a user runs it: a real process, configured only through its environment.

Contract: stdout carries the answer alone (an id, or JSON with --json); every error is one `error: …` line on
stderr, never a traceback; exit 0 ok, 2 bad usage or input, 1 the operation failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click
import httpx
import pytest

from shared.cli import COMMANDS
from shared.cli import cli as group
from shared.dev.processes import free_port
from shared.ids import SessionId, TicketId
from shared.store import archive, keys
from shared.store.archive import ArchiveRow
from shared.store.migrate import load_migrations
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

SESSION_ID = re.compile(r"ses_[0-9A-Za-z]{20,40}")
UNKNOWN = "ses_000000000000AAAAAAAAAAAAAA"  # the ses_ form, but no store has it
SCRIPT = Path(sys.executable).with_name("opencode-sessions")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from shared.cli import main; main()"]
# Everything shared.config reads: the outer environment must not leak into the child.
CONFIG_VARIABLES = {
    "REDIS_URL",
    "DATABASE_URL",
    "OPENCODE_URL",
    "OPENCODE_DIRECTORY",
    "OPENCODE_TIMEOUT_MS",
    "OPENCODE_RETRY_DEADLINE_MS",
    "POLL_INTERVAL_MS",
    "LEASE_TTL_MS",
    "MAX_SESSIONS_PER_POLLER",
    "RECONCILE_INTERVAL_MS",
    "POLLER_ID",
    "LOG_LEVEL",
    "LOG_FORMAT",
}


async def cli(args: Sequence[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES} | env
    result = await anyio.run_process([*COMMAND, *args], input=(stdin or "").encode(), env=child_env, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The single `error:` line of a failed run, checked against the contract."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


@pytest.fixture
def env(redis_url: str, schema: str, simulator_url: str, redis: Any, db: Any) -> dict[str, str]:
    """The child's environment: the test Redis (flushed), PostgreSQL (truncated) and OpenCode simulator."""
    return {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}


async def row_of(db: Any, sid: str) -> ArchiveRow | None:
    return await archive.fetch(db, SessionId(sid))


async def archived(db: Any, sid: str) -> Any:
    row = await row_of(db, sid)
    return row if row and row.status not in ("pending", "running") else None


async def queued_prompts(redis: Any, sid: SessionId) -> list[str]:
    return [json.loads(p)["text"] for p in await redis.lrange(keys.prompts(sid), 0, -1)]


async def opencode_sessions(simulator_url: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        response = await client.get("/session")
        response.raise_for_status()
        sessions: list[Any] = response.json()
        return sessions


async def enqueue(env: dict[str, str], *args: str) -> SessionId:
    out = ok(await cli(["enqueue", "--type", "ask", *args], env))
    assert SESSION_ID.fullmatch(out.strip()) and out.count("\n") == 1, out
    return SessionId(out.strip())


# --- success --------------------------------------------------------------------------------------------------------


async def test_enqueue_prints_only_the_session_id_and_queues_it(env, redis, db):
    sid = await enqueue(env, "--ticket", "T-1", "--prompt", "ECHO hello", "--title", "From the CLI")
    row = await row_of(db, sid)
    assert row is not None and (row.ticket_id, row.session_type, row.status) == ("T-1", "ask", "pending")
    job = await redis.hgetall(keys.job(sid))
    assert job[b"sessionId"] == sid.encode() and job[b"title"] == b"From the CLI"
    assert await queued_prompts(redis, sid) == ["ECHO hello"]
    assert await redis.get(keys.ticket_active(TicketId("T-1"))) == sid.encode()


async def test_enqueue_json_prints_the_pending_state(env, redis, db):
    out = ok(await cli(["enqueue", "--type", "chat", "--metadata", '{"k": ["v", 1]}', "--json"], env))
    state = json.loads(out)
    assert SESSION_ID.fullmatch(state["sessionId"])
    assert (state["status"], state["sessionType"], state["live"]) == ("pending", "chat", True)
    assert state["metadata"] == {"k": ["v", 1]} and state["ticketId"] is None
    row = await row_of(db, state["sessionId"])
    assert row is not None and row.metadata["k"] == ["v", 1]
    assert await redis.exists(keys.job(SessionId(state["sessionId"])), keys.session(SessionId(state["sessionId"]))) == 2


async def test_enqueue_reads_the_prompt_from_stdin(env, redis):
    prompt = "ECHO from stdin\nsecond line — ünïcode\n"
    out = ok(await cli(["enqueue", "--type", "ask", "--prompt", "-"], env, stdin=prompt))
    sid = SessionId(out.strip())
    assert SESSION_ID.fullmatch(sid)
    assert await queued_prompts(redis, sid) == [prompt]


async def test_send_queues_a_follow_up_on_a_live_session(env, redis):
    sid = await enqueue(env, "--prompt", "ECHO first")
    out = ok(await cli(["send", sid, "ECHO second"], env))
    assert re.fullmatch(r"msg_[0-9A-Za-z]{20,40}\n", out)
    assert await queued_prompts(redis, sid) == ["ECHO first", "ECHO second"]
    assert json.loads(await redis.lindex(keys.prompts(sid), 1))["messageID"] == out.strip()


async def test_cancel_requests_the_cancel_then_a_finished_session_is_a_conflict(env, redis, db, make_worker):
    sid = await enqueue(env, "--prompt", "ECHO never")
    assert ok(await cli(["cancel", sid], env)) == f"cancel requested: {sid}\n"
    assert (await redis.hgetall(keys.job(sid)))[b"cancel"] == b"1"
    await make_worker()
    row = await wait_for(lambda: archived(db, sid), timeout=30, what="the cancelled session's archive")
    assert row.status == "cancelled"
    one_error(await cli(["cancel", sid], env), 1, sid, "cancelled")


async def test_show_a_live_session_then_its_archive(env, db, make_worker):
    sid = await enqueue(env, "--prompt", "ECHO shown")
    assert ok(await cli(["show", sid], env)) == f"{sid}  pending  (live, ask)\n"
    live = json.loads(ok(await cli(["show", sid, "--json"], env)))
    assert (live["sessionId"], live["status"], live["live"]) == (sid, "pending", True)

    await make_worker()
    row = await wait_for(lambda: archived(db, sid), timeout=30, what="the archive")
    assert row.status == "completed"
    text = ok(await cli(["show", sid], env))
    assert text.splitlines()[0] == f"{sid}  completed  (archived, ask)"
    assert "ECHO shown" in text
    shown = json.loads(ok(await cli(["show", sid, "--json"], env)))
    assert (shown["status"], shown["live"]) == ("completed", False)
    assert shown["messages"] == row.messages


async def test_migrate_applies_then_is_up_to_date(fresh_database):
    env = {"DATABASE_URL": fresh_database}
    every = [m.name for m in load_migrations()]
    assert ok(await cli(["migrate"], env)) == f"applied: {', '.join(every)}\n"
    assert ok(await cli(["migrate"], env)) == "up to date\n"
    again = json.loads(ok(await cli(["migrate", "--json"], env)))
    every_run = [m.name for m in load_migrations() if m.every_run]
    assert again == {"applied": [], "reapplied": every_run, "upToDate": True}  # the same "up to date" as above


async def test_help_and_version_exit_zero():
    listed = re.findall(r"^  (\w+) ", ok(await cli(["--help"], {})).split("Commands:")[1], re.M)
    assert listed == sorted(COMMANDS) and "enqueue" in listed
    assert "version" in ok(await cli(["--version"], {}))


def test_each_command_is_loaded_from_its_own_module_by_its_name():
    with click.Context(group) as ctx:
        for name, module in COMMANDS.items():
            command = group.get_command(ctx, name)
            assert command is not None and command.name == name and command.callback is not None
            assert command.callback.__module__ == module, name


async def test_a_token_is_minted_without_loading_the_store_or_http_clients():
    """`token` (and a usage error) answers without importing what only the commands that reach a server use."""
    probe = (
        "import atexit, sys; from shared.cli import main\n"
        "atexit.register(lambda: print(sorted(m for m in ('aiohttp', 'psycopg', 'redis') if m in sys.modules)))\n"
        "main()"
    )
    env = {"GATEWAY_AUTH_SECRET": "x" * 32, "PATH": os.environ["PATH"]}
    for args, code in ((["token", "--admin"], 0), (["token"], 2), (["nope"], 2)):
        result = await anyio.run_process([sys.executable, "-c", probe, *args], env=env, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert result.stdout.decode().splitlines()[-1] == "[]", args


# --- bad usage or input: exit 2, nothing written --------------------------------------------------------------------

BAD_INPUT = {
    "unknown type": (["enqueue", "--type", "bogus"], None, {}, "--type"),
    "missing type": (["enqueue"], None, {}, "--type"),
    "unknown command": (["bogus"], None, {}, "bogus"),
    "send: invalid session id": (["send", "bad-id", "ECHO hi"], None, {}, "session id"),
    "cancel: invalid session id": (["cancel", "bad-id"], None, {}, "session id"),
    "show: invalid session id": (["show", "ses_;DROP"], None, {}, "session id"),
    "bad JSON metadata": (["enqueue", "--type", "ask", "--metadata", "{bad"], None, {}, "JSON"),
    "metadata not an object": (["enqueue", "--type", "ask", "--metadata", "[1, 2]"], None, {}, "object"),
    "reserved metadata key": (["enqueue", "--type", "ask", "--metadata", '{"sessionLayer": {}}'], None, {}, "reserved"),
    "empty prompt": (["enqueue", "--type", "ask", "--prompt", ""], None, {}, "prompt"),
    "empty prompt on stdin": (["enqueue", "--type", "ask", "--prompt", "-"], " \n", {}, "prompt"),
    "send: empty prompt": (["send", UNKNOWN, "  "], None, {}, "prompt"),
    "invalid ticket id": (["enqueue", "--type", "ask", "--ticket", "a b"], None, {}, "ticket"),
    "bad POLL_INTERVAL_MS": (["enqueue", "--type", "ask"], None, {"POLL_INTERVAL_MS": "abc"}, "POLL_INTERVAL_MS"),
    "REDIS_URL not redis": (["show", UNKNOWN], None, {"REDIS_URL": "http://x"}, "REDIS_URL"),
    "DATABASE_URL not postgres": (["migrate"], None, {"DATABASE_URL": "mysql://x/db"}, "DATABASE_URL"),
    "OPENCODE_URL not http": (["enqueue", "--type", "ask"], None, {"OPENCODE_URL": "ftp://x"}, "OPENCODE_URL"),
}


@pytest.mark.parametrize(("args", "stdin", "overrides", "names"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_exits_2_with_one_error_line(env, redis, db, simulator_url, args, stdin, overrides, names):
    one_error(await cli(args, env | overrides, stdin=stdin), 2, names)
    assert await redis.keys("*") == []
    assert (await (await db.execute("SELECT count(*) FROM opencode_sessions")).fetchone())[0] == 0
    assert await opencode_sessions(simulator_url) == []


# --- the operation failed: exit 1 -----------------------------------------------------------------------------------

OPERATIONS = {
    "enqueue": ["enqueue", "--type", "ask", "--prompt", "ECHO hi"],
    "send": ["send", UNKNOWN, "ECHO hi"],
    "cancel": ["cancel", UNKNOWN],
    "show": ["show", UNKNOWN],
}


@pytest.mark.parametrize("args", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_unreachable_redis_exits_1_naming_it(env, args):
    one_error(await cli(args, env | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}), 1, "Redis")


@pytest.mark.parametrize("args", [*OPERATIONS.values(), ["migrate"]], ids=[*OPERATIONS.keys(), "migrate"])
async def test_unreachable_postgresql_exits_1_naming_it(env, args):
    one_error(
        await cli(args, env | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}), 1, "PostgreSQL"
    )


async def test_unreachable_opencode_exits_1_naming_it(env, redis, db):
    one_error(
        await cli(OPERATIONS["enqueue"], env | {"OPENCODE_URL": f"http://127.0.0.1:{free_port()}"}), 1, "OpenCode"
    )
    assert await redis.keys("*") == []
    assert (await (await db.execute("SELECT count(*) FROM opencode_sessions")).fetchone())[0] == 0


@pytest.mark.parametrize("command", ["show", "send", "cancel"])
async def test_unknown_session_exits_1(env, command):
    args = [command, UNKNOWN, *(["ECHO hi"] if command == "send" else [])]
    one_error(await cli(args, env), 1, UNKNOWN, "not found")


async def test_a_database_without_the_table_says_to_migrate(env, fresh_database):
    one_error(await cli(["show", UNKNOWN], env | {"DATABASE_URL": fresh_database}), 1, "migrate")


BAD_INPUT_WITH_STORES_DOWN = {
    "show: invalid session id": ["show", "bad-id"],
    "send: empty prompt": ["send", UNKNOWN, ""],
    "enqueue: invalid ticket id": ["enqueue", "--type", "ask", "--ticket", "a:b"],
}


@pytest.mark.parametrize("args", BAD_INPUT_WITH_STORES_DOWN.values(), ids=BAD_INPUT_WITH_STORES_DOWN.keys())
async def test_bad_input_is_exit_2_even_when_the_stores_are_down(args):
    down = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        "OPENCODE_URL": f"http://127.0.0.1:{free_port()}",
    }
    one_error(await cli(args, down), 2)


async def test_migrate_json_says_what_plain_migrate_says(fresh_database):
    env = {"DATABASE_URL": fresh_database}
    first = json.loads(ok(await cli(["migrate", "--json"], env)))
    assert first == {"applied": [m.name for m in load_migrations()], "reapplied": [], "upToDate": False}
    assert ok(await cli(["migrate"], env)) == "up to date\n"
