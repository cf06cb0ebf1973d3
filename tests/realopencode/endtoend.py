"""One scenario end to end: our CLI enqueues (and cancels, and sends follow-ups), two `opencode-poller` processes
work it against an OpenCode server (the real one, or the simulator), and the archived row is checked."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from redis.asyncio import Redis

from shared.ids import SessionId
from shared.models import FINAL_STATUSES
from shared.sessions import read_live
from tests.helpers import Child, wait_for
from tests.realopencode.record_fixtures import Scenario

POLLER_ENV = {"POLL_INTERVAL_MS": "200", "LEASE_TTL_MS": "3000"}
RUN_TIMEOUT_S = 90.0


def cli_command() -> list[str]:
    """`opencode-sessions` from this interpreter's environment."""
    script = Path(sys.executable).with_name("opencode-sessions")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from shared.cli import main; main()"]


@dataclass
class Archived:
    """A scenario's end: the archived row, the ids our CLI printed, and the pollers that ran it."""

    session_id: str
    status: str
    error: str | None
    messages: list[Any]
    sent_ids: list[str]  # the messageID `send` printed for every prompt after the first
    pollers: list[Child] = field(default_factory=list)

    def archive_count(self) -> int:
        """How many times the pollers logged archiving this session (once per answered run)."""
        count = 0
        for child in self.pollers:
            for line in child.output().splitlines():
                if '"session_archived"' in line and json.loads(line).get("session_id") == self.session_id:
                    count += 1
        return count


RunScenario = Callable[[Scenario, str], Awaitable[Archived]]


def scenario_runner(
    redis: Redis, db: Any, make_poller: Callable[..., Child], *, redis_url: str, database_url: str
) -> RunScenario:
    """`await run(scenario, opencode_url)`: two poller replicas, `opencode-sessions enqueue`, `cancel` once the
    answer streams or a tool runs (if the scenario says so), `send` for each further prompt once the previous
    run is archived; returns when the last run is archived."""

    async def cli(*args: str, opencode_url: str) -> str:
        env = os.environ | {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "OPENCODE_URL": opencode_url}
        result = await anyio.run_process([*cli_command(), *args], env=env, check=False)
        err = result.stderr.decode(errors="replace")
        assert result.returncode == 0, f"opencode-sessions {' '.join(args)} exited {result.returncode}: {err}"
        return result.stdout.decode().strip()

    async def archived_row(session_id: str, message_id: str | None) -> tuple[Any, ...] | None:
        cur = await db.execute(
            "SELECT status, messages, error_message FROM opencode_sessions WHERE id = %s", (session_id,)
        )
        row = await cur.fetchone()
        if row is None or row[0] not in FINAL_STATUSES:
            return None
        if message_id is not None and message_id not in {m["info"]["id"] for m in row[1]}:
            return None  # still the previous run's archive
        return tuple(row)

    async def cancel_point(session_id: str, scenario: Scenario) -> bool:
        """The live state (what the pollers mirrored) shows the assistant's text part (the answer streams; its
        stored text stays "" until it ends), or a tool part `running`."""
        live = await read_live(redis, SessionId(session_id))
        messages = (live or {}).get("messages") or []
        parts = [p for m in messages if m["info"]["role"] == "assistant" for p in m["parts"]]
        if scenario.cancel == "text":
            return any(p["type"] == "text" for p in parts)
        return any(p["type"] == "tool" and p["state"]["status"] == "running" for p in parts)

    async def run(scenario: Scenario, opencode_url: str) -> Archived:
        pollers = [make_poller(opencode_url, name=f"{scenario.name}-{r}", **POLLER_ENV) for r in ("a", "b")]
        ticket = f"T-{scenario.name}"
        args = ["enqueue", "--type", scenario.session_type, "--ticket", ticket, "--prompt", scenario.prompts[0]]
        session_id = await cli(*args, opencode_url=opencode_url)
        if scenario.cancel:
            what = f"time to cancel ({scenario.cancel})"
            await wait_for(lambda: cancel_point(session_id, scenario), timeout=RUN_TIMEOUT_S, what=what)
            assert await cli("cancel", session_id, opencode_url=opencode_url) == f"cancel requested: {session_id}"
        row = await wait_for(
            lambda: archived_row(session_id, None), timeout=RUN_TIMEOUT_S, what=f"{session_id} archived"
        )
        sent_ids = []
        for text in scenario.prompts[1:]:
            message_id = await cli("send", session_id, text, opencode_url=opencode_url)
            sent_ids.append(message_id)
            row = await wait_for(
                lambda: archived_row(session_id, message_id),  # noqa: B023 - awaited in this iteration
                timeout=RUN_TIMEOUT_S,
                what=f"{session_id} archived again with {message_id}",
            )
        assert row is not None
        status, messages, error = row
        return Archived(session_id, status, error, messages, sent_ids, pollers)

    return run


def check_archived(archived: Archived, scenario: Scenario, server_messages: list[Any]) -> None:
    """The archive holds exactly what the server holds, with the scenario's status and error text."""
    assert (archived.status, archived.error) == (scenario.status, scenario.error)
    assert archived.messages == server_messages  # same message ids, same part ids, same content
    users = [m for m in archived.messages if m["info"]["role"] == "user"]
    assert [[p.get("text") for p in m["parts"]] for m in users] == [[text] for text in scenario.prompts]
    assert [m["info"]["id"] for m in users[1:]] == archived.sent_ids  # each prompt delivered once, under our id
    last = archived.messages[-1]["info"]
    assert last["role"] == "assistant" and last["parentID"] == users[-1]["info"]["id"]
    assert archived.archive_count() == len(scenario.prompts)  # one archive per run, by one replica
