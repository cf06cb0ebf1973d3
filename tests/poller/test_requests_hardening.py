"""Interactive runs against a hostile or failing OpenCode: an answer OpenCode refuses, a reply route that keeps
failing, an answer recorded but never handed to the owner, one request id listed under two sessions."""

from __future__ import annotations

from typing import Any

import pytest

from shared import answers, commands
from shared.errors import Conflict
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import requests
from shared.store.live import read_record
from tests.helpers import wait_for, waiting_entry
from tests.poller.hostile_asks import BAD_REQUEST, final

pytestmark = pytest.mark.anyio

DEPARTING = "per_dup0002"


async def start(redis: Any, db: Any, oc: OpenCodeClient, prompt: str) -> str:
    rules = ["bash=ask"] if "TOOL" in prompt else []
    state = await commands.enqueue(redis, db, oc, session_type="ask", prompt=prompt, permission=rules)
    return str(state["sessionId"])


async def test_an_answer_opencode_refuses_ends_the_session_instead_of_waiting_for_ever(
    hostile, client, make_worker, redis, db
):
    """Was: a 4xx to our reply was logged and the answer marked done; the question still waited, the timeout passed
    it over (it had an answer) and a second answer was a Conflict: the session waited for ever."""
    url, front = hostile
    await make_worker(opencode_url=url, pending_request_timeout_s=0.5)
    sid = await start(redis, db, client, "QUESTION pick")
    entry = await waiting_entry(redis, sid)
    front.reply_with = (400, BAD_REQUEST)
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="alice")
    status, error = await wait_for(lambda: final(db, sid), timeout=20, what="the session ended")
    assert status == "error" and entry["id"] in (error or "") and "refused" in (error or "")
    assert [path for path, _ in front.sent] == [f"/question/{entry['id']}/reply"]  # sent once, not in a loop
    # the run, blocked on the question, is aborted: OpenCode would keep it waiting
    assert sid not in await client.status() and await client.questions() == []


async def test_a_reply_route_that_keeps_failing_ends_the_session_at_the_retry_deadline(
    hostile, client, make_worker, redis, db
):
    """Was: a 5xx to our reply was retried every tick, for ever, while the run waited."""
    url, front = hostile
    await make_worker(opencode_url=url, opencode_retry_deadline_s=1.0)
    sid = await start(redis, db, client, "TOOL run")
    entry = await waiting_entry(redis, sid)
    front.reply_with = (500, {"name": "UnknownError", "data": {"message": "boom"}})
    await answers.reply(redis, db, sid, entry["id"], "once", by="bob")
    status, error = await wait_for(lambda: final(db, sid), timeout=20, what="the session ended")
    assert status == "error" and entry["id"] in (error or "") and "boom" in (error or "")
    assert len(front.sent) >= 2  # retried meanwhile


async def test_an_answer_recorded_but_never_handed_over_reaches_opencode_on_the_next_try(
    hostile, client, make_worker, redis, db
):
    """The API recorded the answer in PostgreSQL, then Redis was unreachable (or the process died) before the job
    got it. Was: every later answer was `already answered`, and the run waited for ever on an answer nobody gave
    to OpenCode."""
    url, _ = hostile
    await make_worker(opencode_url=url)
    sid = await start(redis, db, client, "TOOL run")
    entry = await waiting_entry(redis, sid)
    assert await requests.record_answer(db, sid, entry, {"reply": "once"}, "carol", 1) is not None
    with pytest.raises(Conflict, match="already answered by carol"):
        await answers.reply(redis, db, sid, entry["id"], "reject", by="dave")
    assert await wait_for(lambda: final(db, sid), timeout=20) == ("completed", None)
    [row] = await requests.of_session(db, sid)
    assert (row.answer, row.answered_by, row.outcome) == ({"reply": "once"}, "carol", "answered")


async def test_the_timeout_hands_over_an_answer_recorded_but_never_handed_over(hostile, client, make_worker, redis, db):
    """Nobody tries again: the poller's own timeout finds the recorded answer and gives it to OpenCode."""
    url, _ = hostile
    await make_worker(opencode_url=url, pending_request_timeout_s=0.3)
    sid = await start(redis, db, client, "QUESTION pick")
    entry = await waiting_entry(redis, sid)
    assert await requests.record_answer(db, sid, entry, {"answers": [["Blue"]]}, "carol", 1) is not None
    assert await wait_for(lambda: final(db, sid), timeout=20) == ("completed", None)
    final_text = (await client.messages(sid))[-1]["parts"][1]["text"]
    assert '="Blue"' in final_text
    [row] = await requests.of_session(db, sid)
    assert (row.answered_by, row.outcome) == ("carol", "answered")


def duplicate(session_id: str, request_id: str = "per_dup0001") -> dict[str, Any]:
    return {
        "id": request_id,
        "sessionID": session_id,
        "permission": "bash",
        "patterns": ["rm -rf /"],
        "metadata": {},
        "always": [],
    }


async def test_one_request_id_under_two_sessions_never_answers_the_other_sessions_request(
    hostile, client, make_worker, redis, db
):
    """Was: the answer to session B's `per_dup0001` was written into session A's row (the table is keyed by the
    request id alone): A's own request then read `already answered`, by B's person."""
    url, front = hostile
    await make_worker(opencode_url=url)
    first, second = await start(redis, db, client, "QUESTION a"), await start(redis, db, client, "QUESTION b")
    await waiting_entry(redis, first), await waiting_entry(redis, second)
    front.extra["permission"] = [duplicate(first), duplicate(second)]

    async def recorded() -> Any:
        return await requests.fetch(db, "per_dup0001")

    owner = (await wait_for(recorded, timeout=20)).session_id
    other = second if owner == first else first
    for sid in (owner, other):  # both show it
        await wait_for(lambda s=sid: _lists(redis, s, "per_dup0001"), timeout=20)
    with pytest.raises(Conflict, match="another session"):
        await answers.reply(redis, db, other, "per_dup0001", "always", by="mallory")
    row = await requests.fetch(db, "per_dup0001")
    assert row is not None and (row.session_id, row.answer) == (owner, None)
    await answers.reply(redis, db, owner, "per_dup0001", "reject", by="alice")
    row = await requests.fetch(db, "per_dup0001")
    assert row is not None and (row.session_id, row.answer, row.answered_by) == (owner, {"reply": "reject"}, "alice")


async def test_one_request_id_departing_from_one_session_leaves_the_other_sessions_request_waiting(
    hostile, client, make_worker, redis, db
):
    """Was: `gone` and `answered` were recorded by request id alone, so when OpenCode stopped listing the id under
    session B, and as B ended, A's row of that id (still waiting) was recorded `gone`."""
    url, front = hostile  # an id of its own: the tables outlive each test
    await make_worker(opencode_url=url)
    first, second = await start(redis, db, client, "QUESTION a"), await start(redis, db, client, "QUESTION b")
    await waiting_entry(redis, first), await waiting_entry(redis, second)
    front.extra["permission"] = [duplicate(first, DEPARTING), duplicate(second, DEPARTING)]
    owner = (await wait_for(lambda: requests.fetch(db, DEPARTING), timeout=20)).session_id
    other = second if owner == first else first
    await wait_for(lambda: _lists(redis, other, DEPARTING), timeout=20)
    front.extra["permission"] = [duplicate(owner, DEPARTING)]  # OpenCode stops listing it under the other session
    question = next(e for e in (await read_record(redis, SessionId(other))).state.pending if e["kind"] == "question")
    await answers.answer(redis, db, other, question["id"], choices=[["Blue"]], by="bob")
    assert await wait_for(lambda: final(db, other), timeout=20) == ("completed", None)  # its requests settled
    row = await requests.fetch(db, DEPARTING)
    assert row is not None and (row.session_id, row.outcome) == (owner, None)
    assert await wait_for(lambda: _lists(redis, owner, DEPARTING), timeout=20, what="still waiting under its owner")


async def _lists(redis: Any, sid: str, request_id: str) -> bool:
    record = await read_record(redis, SessionId(sid))
    return record is not None and any(e.get("id") == request_id for e in record.state.pending)
