"""Interactive runs against a failing OpenCode. An answer OpenCode refused ends the session in `error` (unless a
follow-up waits: it runs); its request must then be settled (`gone`: OpenCode stopped waiting without our answer),
never left `unanswered` in the archive, nor handed to OpenCode again when the session comes back to life, as real
OpenCode (1.18.33) still lists a request of a run it aborted."""

from __future__ import annotations

import json
from typing import Any

import anyio
import psycopg_pool
import pytest

from poller.answers import ANSWER_PREFIX, AnswerDelivery
from poller.archive import Archive
from poller.pending import PendingRequests
from poller.request_board import RequestBoard
from shared import answers, commands
from shared.errors import Conflict
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import requests
from shared.store.live import read_record
from tests.helpers import stored, wait_for, waiting_entry
from tests.poller.hostile_asks import BAD_REQUEST, HostileAsks, final

pytestmark = pytest.mark.anyio


async def outcome_of(db: Any, request_id: str) -> str | None:
    row = await requests.fetch(db, request_id)
    return row.outcome if row is not None else None


def as_listed(sid: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The request as OpenCode's `GET /question` lists it (the live entry without our fields)."""
    return {"id": entry["id"], "sessionID": sid, "questions": entry["questions"], "tool": entry["tool"]}


async def waiting_question(started: Any, redis: Any, db: Any, client: OpenCodeClient) -> tuple[str, dict[str, Any]]:
    """A poller started (`started`: make_worker's), a session asking a question: its id and the waiting entry."""
    await started
    state = await commands.enqueue(redis, db, client, session_type="ask", prompt="QUESTION pick")
    sid = str(state["sessionId"])
    return sid, await waiting_entry(redis, sid)


async def answering(client: OpenCodeClient, sid: str) -> bool:
    """The newest message is the follow-up's answer, under way."""
    messages = await client.messages(sid)
    return bool(messages) and messages[-1]["info"]["role"] == "assistant" and len(messages) > 2


async def listed_since(front: HostileAsks, count: int) -> bool:
    return front.lists >= count


async def test_a_refused_answer_is_settled_gone_and_never_given_again_to_the_revived_session(
    hostile, client, make_worker, redis, db
):
    """Was: the refused answer's row kept no outcome: the archive showed it `unanswered`, and when the session came
    back (a follow-up) with OpenCode still listing the aborted run's request, the next answer to it handed the
    refused answer over again: OpenCode refused it again and the follow-up's run was aborted, ending in `error`. The
    revived session does not show the dead request as waiting."""
    url, front = hostile
    sid, entry = await waiting_question(make_worker(opencode_url=url), redis, db, client)
    front.reply_with = (400, BAD_REQUEST)
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="alice")
    status, error = await wait_for(lambda: final(db, sid), timeout=20, what="the session ended")
    assert status == "error" and "refused" in (error or "")
    assert await outcome_of(db, entry["id"]) == "gone"  # was: None, shown `unanswered` for good

    front.extra["question"] = [as_listed(sid, entry)]  # OpenCode keeps listing the aborted run's request
    await commands.send(redis, db, sid, "SLOW and now?")
    lists = front.lists
    await wait_for(lambda: answering(client, sid), timeout=20, what="the follow-up's run")
    await wait_for(lambda: listed_since(front, lists + 4), timeout=20, what="the lists read again")
    record = await read_record(redis, SessionId(sid))  # was: `waiting` on the dead request, `watch` said answer it
    assert record is not None and (record.state.status, record.state.pending) == ("running", [])
    assert await final(db, sid) is None  # running again
    with pytest.raises(Conflict, match="not taken"):
        await answers.answer(redis, db, sid, entry["id"], choices=[["Red"]], by="bob")
    assert await wait_for(lambda: final(db, sid), timeout=20, what="the follow-up ended") == ("completed", None)
    assert len(front.sent) == 1  # the refused answer was given once, not again to the new run


async def answered_follow_up(client: OpenCodeClient, sid: str, message_id: str) -> bool:
    messages = await client.messages(sid)
    return any(m["info"].get("parentID") == message_id for m in messages)


async def test_a_refused_answer_with_a_follow_up_queued_still_answers_the_follow_up(
    hostile, client, make_worker, redis, db
):
    """The run blocked on the refused answer is aborted, and OpenCode's abort leaves the prompt queued behind it
    unanswered. Was: the session ended in `error`, the follow-up a person sent never answered (nor said lost)."""
    url, front = hostile
    sid, entry = await waiting_question(make_worker(opencode_url=url), redis, db, client)
    follow_up = await commands.send(redis, db, sid, "ECHO and then?")
    await wait_for(lambda: stored(client, sid, follow_up), timeout=20, what="the follow-up queued in OpenCode")
    front.reply_with = (400, BAD_REQUEST)
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="alice")
    status, error = await wait_for(lambda: final(db, sid), timeout=20, what="the session ended")
    assert await answered_follow_up(client, sid, follow_up), (status, error)
    assert await outcome_of(db, entry["id"]) == "gone"


NOT_FOUND = {"name": "NotFoundError", "data": {"message": "Permission request not found"}}


async def sent(front: HostileAsks) -> bool:
    return bool(front.sent)


def extra_permission(sid: str, request_id: str = "per_gone00000001") -> dict[str, Any]:
    return {"id": request_id, "sessionID": sid, "permission": "bash", "patterns": ["ls"], "metadata": {}, "always": []}


async def test_an_answer_opencode_never_took_is_recorded_gone_not_answered(hostile, client, make_worker, redis, db):
    """OpenCode answers our reply 404 (it was answered in OpenCode's own UI meanwhile), then stops listing the
    request. Was: recorded `answered`, with alice's reply, as if OpenCode had taken it."""
    url, front = hostile
    await make_worker(opencode_url=url)
    state = await commands.enqueue(redis, db, client, session_type="ask", prompt="QUESTION pick")
    sid = str(state["sessionId"])
    question = await waiting_entry(redis, sid)
    extra = extra_permission(sid)
    front.extra["permission"] = [extra]
    front.reply_with = (404, NOT_FOUND)

    async def listed() -> bool:
        record = await read_record(redis, SessionId(sid))
        return record is not None and any(e["id"] == extra["id"] for e in record.state.pending)

    await wait_for(listed, timeout=20, what="the permission request listed")
    await answers.reply(redis, db, sid, extra["id"], "always", by="alice")
    await wait_for(lambda: sent(front), timeout=20, what="the reply sent")
    front.extra["permission"] = []  # OpenCode no longer waits on it: not thanks to our answer
    assert await wait_for(lambda: outcome_of(db, extra["id"]), timeout=20, what="its outcome") == "gone"
    front.reply_with = None
    await answers.answer(redis, db, sid, question["id"], choices=[["Blue"]], by="bob")
    assert await wait_for(lambda: final(db, sid), timeout=20, what="the session ended") == ("completed", None)
    row = await requests.fetch(db, extra["id"])
    assert row is not None and (row.answered_by, row.outcome, row.delivered_at) == ("alice", "gone", None)


async def test_a_requests_list_read_before_an_answer_came_does_not_settle_it(schema, simulator_url):
    """The question reaches the live state by its `question.asked` event, before the next `GET /question`, and is
    answered at once. Was: the list read before the question was asked lacks it, so the answer was taken for one
    given elsewhere: recorded `answered`, never sent, and the run waited on it for ever (real OpenCode, a second
    question in a row: 5 runs of 5; tests/realopencode/test_plain_reject.py). Now it waits for a list read since."""
    sid = "ses_" + "q" * 26
    async with OpenCodeClient(simulator_url) as oc, psycopg_pool.AsyncConnectionPool(schema, open=False) as pool:
        board = RequestBoard(oc)
        await board.refresh()  # nothing waits yet
        delivery = AnswerDelivery(oc, sid, lambda: True, retry_deadline_s=60)
        delivery.load({f"{ANSWER_PREFIX}que_asked_after_the_list": json.dumps({"answers": [["Blue"]]})})
        async with anyio.create_task_group() as tg:
            await delivery.step(tg, board, PendingRequests(sid, []), Archive(pool))
        assert not delivery.idle  # still to be given, once a list read since says whether OpenCode waits on it
        await board.refresh()
        async with anyio.create_task_group() as tg:
            await delivery.step(tg, board, PendingRequests(sid, []), Archive(pool))
        assert delivery.idle  # that list lacks it too: settled now (answered elsewhere)


async def test_an_answer_the_session_ended_without_is_recorded_gone(hostile, client, make_worker, redis, db):
    """A cancel right after an answer OpenCode did not take (here: 404 to it, while still listing the question).
    Was: the row kept no outcome, shown `unanswered` for good, though a person had answered."""
    url, front = hostile
    sid, entry = await waiting_question(make_worker(opencode_url=url), redis, db, client)
    front.reply_with = (404, NOT_FOUND)
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="alice")
    await wait_for(lambda: sent(front), timeout=20, what="the answer tried")
    await commands.cancel(redis, db, sid)
    assert await wait_for(lambda: final(db, sid), timeout=20, what="the session ended") == ("cancelled", None)
    row = await requests.fetch(db, entry["id"])
    assert row is not None and (row.answered_by, row.outcome) == ("alice", "gone")


async def test_a_refused_answer_is_not_given_again_by_a_replica_that_takes_the_session_over(
    hostile, client, make_worker, redis, db
):
    """The answer was refused, the follow-up runs; a rolling restart hands the session to another replica. Was: it
    found the refused answer recorded and the request still listed (OpenCode lists an aborted run's requests), sent
    it again, and the refusal aborted the follow-up's run: `error`. Its tool call ended: settled, never sent."""
    url, front = hostile
    first = await make_worker(opencode_url=url, replica_id="first")
    state = await commands.enqueue(redis, db, client, session_type="ask", prompt="QUESTION pick")
    sid = str(state["sessionId"])
    entry = await waiting_entry(redis, sid)
    follow_up = await commands.send(redis, db, sid, "SLOW and then?")
    await wait_for(lambda: stored(client, sid, follow_up), timeout=20, what="the follow-up stored")
    front.reply_with = (400, BAD_REQUEST)
    front.extra["question"] = [as_listed(sid, entry)]
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="alice")
    await wait_for(lambda: answering(client, sid), timeout=30, what="the follow-up's run")
    await make_worker(opencode_url=url, replica_id="second")
    await first._release_all()  # SIGTERM's hand-over
    assert await wait_for(lambda: final(db, sid), timeout=40, what="the session ended") == ("completed", None)
    assert len(front.sent) == 1
