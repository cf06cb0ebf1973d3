"""reply's and answer's arguments as the Python API takes them (any object): one of another type, or that
PostgreSQL's text cannot store, is InvalidInput before the answer is recorded, and the request still waits.

Was: AttributeError and TypeError, psycopg's DataError for U+0000 in `by`, UnicodeEncodeError for a lone
surrogate, and `by=b"alice"` recorded as '\\x616c696365'. No poller runs: the session's live state is made to
wait on a request, as a poller would show it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared import answers, commands
from shared.clock import now_ms
from shared.errors import InvalidInput
from shared.ids import SessionId
from shared.store import keys, requests

pytestmark = pytest.mark.anyio

QUESTION = {"header": "Button color", "question": "Which?", "options": [{"label": "Red"}, {"label": "Blue"}]}


async def waiting_on(redis: Any, db: Any, opencode: Any, kind: str) -> tuple[SessionId, str]:
    """A queued session whose live state waits on one new request of `kind` (a permission or a question)."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask"))["sessionId"])
    rid = ("per_" if kind == "permission" else "que_") + uuid.uuid4().hex
    entry = {"id": rid, "kind": kind, "askedAt": now_ms()}
    entry |= {"permission": "bash", "patterns": ["echo hello"]} if kind == "permission" else {"questions": [QUESTION]}
    await redis.hset(keys.session(sid), "pending", json.dumps([entry]))
    return sid, rid


async def assert_not_answered(redis: Any, db: Any, sid: SessionId, rid: str) -> None:
    assert await requests.fetch(db, rid) is None
    assert not [field for field in await redis.hkeys(keys.job(sid)) if field.startswith(b"answer:")]


BAD_REPLIES: dict[str, dict[str, Any]] = {
    "message a number": {"reply": "reject", "message": 5},
    "message bytes": {"reply": "reject", "message": b"x"},
    "by a number": {"by": 5},
    "by bytes": {"by": b"alice"},
    "by with U+0000": {"by": "a\x00b"},
    "by cut mid-emoji": {"by": "a\ud800b"},
}


@pytest.mark.parametrize("bad", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
async def test_a_bad_reply_is_invalid_input_and_the_request_still_waits(redis, db, opencode, bad):
    sid, rid = await waiting_on(redis, db, opencode, "permission")
    with pytest.raises(InvalidInput):
        await answers.reply(redis, db, sid, rid, **{"reply": "once", **bad})
    await assert_not_answered(redis, db, sid, rid)
    assert (await answers.reply(redis, db, sid, rid, "once", by="alice"))["by"] == "alice"
    assert (await requests.fetch(db, rid)).answered_by == "alice"  # type: ignore[union-attr]


BAD_ANSWERS: dict[str, dict[str, Any]] = {
    "choices [None]": {"choices": [None]},
    "choices [5]": {"choices": [5]},
    "choices 5": {"choices": 5},
    "by with U+0000": {"choices": [["Blue"]], "by": "a\x00b"},
    "by cut mid-emoji": {"choices": [["Blue"]], "by": "a\ud800b"},
}


@pytest.mark.parametrize("bad", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
async def test_a_bad_answer_is_invalid_input_and_the_question_still_waits(redis, db, opencode, bad):
    sid, rid = await waiting_on(redis, db, opencode, "question")
    with pytest.raises(InvalidInput):
        await answers.answer(redis, db, sid, rid, **bad)
    await assert_not_answered(redis, db, sid, rid)
    await answers.answer(redis, db, sid, rid, choices=[["Blue"]], by="carol")
    assert (await requests.fetch(db, rid)).answer == {"answers": [["Blue"]]}  # type: ignore[union-attr]


async def test_a_choice_given_as_one_label_is_that_label_not_its_letters(redis, db, opencode):
    """`choices=["Blue"]`: was read as the labels 'B', 'l', 'u', 'e'."""
    sid, rid = await waiting_on(redis, db, opencode, "question")
    assert (await answers.answer(redis, db, sid, rid, choices=["Blue"]))["answer"] == {"answers": [["Blue"]]}
