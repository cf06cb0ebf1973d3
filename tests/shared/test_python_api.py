"""The Python API as a backend calls it: the README's runnable example, and any psycopg connection mode."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.pq import TransactionStatus

import shared
from shared import InvalidInput, commands, get_session
from shared.ids import SessionId
from shared.store import archive

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_api.py"


async def test_the_example_runs_against_a_running_system(make_worker, redis_url, schema, simulator_url):
    await make_worker()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENCODE_"))}
    env |= {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}
    result = await anyio.run_process(
        [sys.executable, str(EXAMPLE)], env=env, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("enqueued ses_") and " (pending), now " in lines[0]
    assert lines[1].endswith(" completed with 3 messages")
    assert lines[2] == "after the follow-up: completed with 5 messages"


async def test_writes_commit_on_a_connection_with_autocommit_off(redis, schema, opencode, db):
    caller = await psycopg.AsyncConnection.connect(schema)  # psycopg's default: autocommit off
    try:
        state = await commands.enqueue(redis, caller, opencode, session_type="ask", prompt="ECHO hi")
        assert caller.info.transaction_status == TransactionStatus.IDLE  # nothing left open for the caller
        row = await archive.fetch(db, SessionId(state["sessionId"]))  # another connection sees it at once
        assert row is not None and row.status == "pending"
        assert (await get_session(redis, caller, state["sessionId"]))["status"] == "pending"
        assert caller.info.transaction_status == TransactionStatus.IDLE
        assert await commands.cancel(redis, caller, state["sessionId"]) == "requested"
        assert caller.info.transaction_status == TransactionStatus.IDLE
    finally:
        await caller.close()


async def test_a_connection_with_a_transaction_in_progress_is_refused(redis, schema, opencode, db):
    caller: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(schema)
    try:
        await caller.execute("SELECT 1")  # the caller's own transaction, still open
        before = await (await db.execute("SELECT count(*) FROM opencode_sessions")).fetchone()
        with pytest.raises(InvalidInput, match="transaction in progress"):
            await commands.enqueue(redis, caller, opencode, session_type="ask", prompt="ECHO hi")
        assert caller.info.transaction_status == TransactionStatus.INTRANS  # left exactly as it was
        after = await (await db.execute("SELECT count(*) FROM opencode_sessions")).fetchone()
        assert after == before
    finally:
        await caller.close()


def test_the_api_names_load_on_first_use_and_each_is_its_modules_own():
    """`import shared` costs nothing until a name is used, and every exported name is the object its module holds."""
    probe = "import shared, sys; print(sorted(m for m in ('redis', 'psycopg', 'aiohttp') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    assert set(shared.__all__) <= set(dir(shared)) and "enqueue" in shared.__all__
    for name in shared.__all__:
        assert getattr(shared, name) is getattr(importlib.import_module(shared._HOMES[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = shared.nope  # type: ignore[attr-defined]
