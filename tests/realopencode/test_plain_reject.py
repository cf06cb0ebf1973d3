"""Against the real `opencode serve`: a plain `reject` (no message) of a permission request, or a dismissed
question, stops OpenCode's run where it stands (the newest assistant message ends `finish: "tool-calls"`, the
session idle; measured on 1.18.33), leaving a follow-up queued behind the run unanswered. The session still ends
and is archived, and the follow-up is answered (poller/dropped.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import answers, commands
from shared.opencode.client import OpenCodeClient
from shared.store import archive, requests
from tests.helpers import stored, wait_for, waiting_entry
from tests.realopencode.harness import RealOpenCode

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]


async def final(db: Any, sid: str) -> tuple[str, str | None] | None:
    row = await archive.fetch(db, sid)
    return (row.status, row.error_message) if row and not row.unfinished else None


# the third, a second question answered at once on one server, was answered before any `GET /question` listed it
@pytest.mark.parametrize("prompt", ["QUESTION pick", "TOOL run it", "QUESTION again"])
async def test_a_plain_reject_that_stops_opencodes_run_ends_the_session(
    real_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any, prompt: str
) -> None:
    """Was: the session stayed `running` for ever, its run stopped by OpenCode after a tool-calls step."""
    await make_worker(opencode_url=real_opencode.url, poll_interval_s=0.1)
    async with OpenCodeClient(real_opencode.url) as opencode:
        rules = ["bash=ask"] if "TOOL" in prompt else []
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt, permission=rules)
        sid = str(state["sessionId"])
        entry = await waiting_entry(redis, sid)
        if entry["kind"] == "permission":
            await answers.reply(redis, db, sid, entry["id"], "reject", by="alice")
        else:
            await answers.answer(redis, db, sid, entry["id"], reject=True, by="alice")
        status, _ = await wait_for(lambda: final(db, sid), timeout=20, what="the session archived")
        messages = await opencode.messages(sid)
    assert messages[-1]["info"]["finish"] == "tool-calls"  # OpenCode stopped the run there
    assert status == "completed"
    [row] = await requests.of_session(db, sid)
    assert (row.answered_by, row.outcome) == ("alice", "answered")


async def test_a_follow_up_left_unanswered_by_a_plain_reject_is_run_again_once(
    real_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any
) -> None:
    """A follow-up sent while a permission waits: OpenCode stores it, then the plain reject ends its loop without
    answering it. Was: the session sat `running` for ever (its newest message a prompt, OpenCode idle)."""
    await make_worker(opencode_url=real_opencode.url, poll_interval_s=0.1)
    async with OpenCodeClient(real_opencode.url) as opencode:
        state = await commands.enqueue(
            redis, db, opencode, session_type="chat", prompt="TOOL run it", permission=["bash=ask"]
        )
        sid = str(state["sessionId"])
        entry = await waiting_entry(redis, sid)
        follow_up = await commands.send(redis, db, sid, "ECHO and then?")
        await wait_for(lambda: stored(opencode, sid, follow_up), timeout=20, what="the follow-up stored by OpenCode")
        await answers.reply(redis, db, sid, entry["id"], "reject", by="alice")
        status, error = await wait_for(lambda: final(db, sid), timeout=40, what="the session archived")
        messages = await opencode.messages(sid)
    assert (status, error) == ("completed", None)
    assert [m["info"]["id"] for m in messages].count(follow_up) == 1  # run again, not stored twice
    answered = [m for m in messages if m["info"].get("parentID") == follow_up]
    assert answered and answered[-1]["info"].get("finish") == "stop"
