"""Usage against a real `opencode serve` whose scripted model reports token usage and whose config prices it:
the live usage grows while the run goes on, the archive holds the sum over OpenCode's final message list, and
`opencode-sessions usage --ticket` is the sum over the ticket's sessions."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from shared import commands
from shared.opencode.client import OpenCodeClient
from shared.store import archive, keys
from shared.usage import Usage
from tests.helpers import wait_for
from tests.realopencode.harness import RealOpenCode, opencode_version, run_opencode
from tests.realopencode.scripted_model import USAGE, serve_scripted_model

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]

# dollars per million tokens, as OpenCode's model config takes them
PRICE = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
STEP_COST = (USAGE["prompt_tokens"] * PRICE["input"] + USAGE["completion_tokens"] * PRICE["output"]) / 1_000_000
CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


@pytest.fixture(scope="module")
def priced_opencode(opencode_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOpenCode]:
    root = tmp_path_factory.mktemp("opencode-priced")
    with (
        serve_scripted_model() as model,
        run_opencode(opencode_binary, root, model.url, version=opencode_version(), price=PRICE) as server,
    ):
        yield RealOpenCode(server, model)


async def live_usage(redis: Any, sid: str) -> Usage | None:
    raw = await redis.hget(keys.session(sid), "usage")
    return Usage.from_json(json.loads(raw)) if raw else None


async def test_live_usage_grows_and_the_archive_and_ticket_total_equal_opencodes_sums(
    priced_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any, redis_url: str, schema: str
) -> None:
    async with OpenCodeClient(priced_opencode.url) as opencode:
        await make_worker(opencode_url=priced_opencode.url, poll_interval_s=0.2)
        tool = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-cost", prompt="TOOL SLOW")
        sid = tool["sessionId"]
        seen: list[Usage] = []

        async def ended() -> archive.ArchiveRow | None:
            if (usage := await live_usage(redis, sid)) is not None and (not seen or seen[-1] != usage):
                seen.append(usage)
            row = await archive.fetch(db, sid)
            return row if row is not None and not row.unfinished else None

        row = await wait_for(ended, timeout=90, interval=0.05, what="the priced TOOL run archived")
        final = Usage.of_messages(await opencode.messages(sid))
        echo = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-cost", prompt="ECHO")

        async def echo_ended() -> archive.ArchiveRow | None:
            found = await archive.fetch(db, echo["sessionId"])
            return found if found is not None and not found.unfinished else None

        echo_row = await wait_for(echo_ended, timeout=60, what="the ECHO run archived")
        echo_final = Usage.of_messages(await opencode.messages(echo["sessionId"]))

    assert final.steps == 2 and final.input == 2 * USAGE["prompt_tokens"]
    assert final.cost == pytest.approx(2 * STEP_COST)
    assert row.usage == final and echo_row.usage == echo_final
    # the run's first step was seen live before its second: the live usage grew during the run (its tokens may
    # land in the same write as the second step: OpenCode fills them in as that step starts)
    assert any(u.steps == 1 for u in seen), seen
    assert [(u.steps, u.input) for u in seen] == sorted((u.steps, u.input) for u in seen)

    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, "usage", "--ticket", "T-cost", "--json"],
            env={**os.environ, "DATABASE_URL": schema, "REDIS_URL": redis_url},
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"sessions": 2, "usage": Usage.total([final, echo_final]).to_json()}
