"""`reply` / `answer` against odd questions and unreachable servers: a label OpenCode never offered is refused, and
a bad `--message` is exit 2 before any server is contacted. No poller runs: the live state is made to wait."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared import answers, commands
from shared.clock import now_ms
from shared.errors import Conflict, InvalidInput, NotFound
from shared.ids import SessionId
from shared.store import keys, requests
from tests.helpers import run_cli, single_error_line

pytestmark = pytest.mark.anyio

UNREACHABLE = {
    "REDIS_URL": "redis://127.0.0.1:1",
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
    "OPENCODE_URL": "http://127.0.0.1:1",
}
SID = "ses_000000000000AAAAAAAAAAAAAA"


async def waiting_on_question(redis: Any, db: Any, opencode: Any, question: dict[str, Any]) -> tuple[SessionId, str]:
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask"))["sessionId"])
    rid = "que_" + uuid.uuid4().hex
    entry = {"id": rid, "kind": "question", "askedAt": now_ms(), "questions": [question]}
    await redis.hset(keys.session(sid), "pending", json.dumps([entry]))
    return sid, rid


async def test_an_option_without_a_label_is_not_the_label_none(redis, db, opencode):
    """Was: an option without a string label read as the label 'None' (or '5'), and `choices=[["None"]]` was
    recorded and sent to OpenCode as the answer."""
    question = {"question": "Which?", "header": "Pick", "options": [{"description": "no label"}, {"label": 5}, "Red"]}
    sid, rid = await waiting_on_question(redis, db, opencode, question)
    for label in ("None", "5", "Red"):
        with pytest.raises(InvalidInput, match="not an option"):
            await answers.answer(redis, db, sid, rid, choices=[[label]])
    assert await requests.fetch(db, rid) is None
    assert (await answers.answer(redis, db, sid, rid, reject=True))["answer"] == {"reject": True}


@pytest.mark.parametrize("message", ["", " ", "x" * 10_001], ids=["empty", "blank", "too-long"])
async def test_a_bad_message_is_exit_2_before_any_server_is_contacted(message):
    """Was: exit 1, `PostgreSQL is unreachable`: the message was checked only after connecting."""
    result = await run_cli(["reply", SID, "per_abc", "--reject", "--message", message], UNREACHABLE)
    single_error_line(result, 2, "message")


async def test_an_answer_recorded_without_its_job_is_handed_over_when_answered_again(redis, db, opencode):
    """The first answer was recorded, then Redis failed before the job got it: answering again is `already
    answered` (the first answer wins) and hands the recorded answer to the owner, once."""
    question = {"question": "Which?", "header": "Pick", "options": [{"label": "Red"}, {"label": "Blue"}]}
    sid, rid = await waiting_on_question(redis, db, opencode, question)
    entry = {"id": rid, "kind": "question", "askedAt": now_ms(), "questions": [question]}
    assert await requests.record_answer(db, sid, entry, {"answers": [["Blue"]]}, "carol", now_ms()) is not None
    for _ in range(2):
        with pytest.raises(Conflict, match="already answered by carol"):
            await answers.answer(redis, db, sid, rid, choices=[["Red"]], by="dave")
    handed = await redis.hget(keys.job(sid), f"answer:{rid}")
    assert json.loads(handed) == {"kind": "question", "answers": [["Blue"]]}


@pytest.mark.parametrize("stored", ["not json", "{", '{"id": "x"}', "7"])
async def test_a_pending_field_that_is_no_json_list_waits_on_nothing(redis, db, opencode, stored):
    """Another backend's write (or a damaged one) in the live state's `pending`. Was: `unexpected JSONDecodeError`
    (exit 1) for text that is not JSON; now, as the gateway reads it, no request waits."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask"))["sessionId"])
    await redis.hset(keys.session(sid), "pending", stored)
    with pytest.raises(NotFound, match="has no pending request per_x"):
        await answers.reply(redis, db, sid, "per_x", "once")
