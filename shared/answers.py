"""Answering what a run waits on: `reply` to a permission request, `answer` a question (or reject either).

Like a prompt, an answer is recorded in PostgreSQL first (opencode_session_requests: the answer, who gave it,
when), then handed to the session's owner through its job in Redis; the owner gives it to OpenCode once, and
only while OpenCode still lists the request (poller.answers). The first answer wins: a second one, or one for
a request that no longer waits, is a Conflict; an unknown request is NotFound.

`answer` takes one group of labels per question, in the question's order (`[["Blue"], ["Small", "Fast"]]`);
a question that allows several answers (`multiple`) takes several labels in its group (or one string of
labels separated by commas, as the CLI's `--choice 'Red,Blue'` gives them), any other exactly one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.clock import now_ms
from shared.errors import Conflict, InvalidInput, NotFound
from shared.ids import SessionId, parse_session_id, parse_text
from shared.models import as_text, dumps, list_of, object_of
from shared.store import keys, requests
from shared.store.archive import PgConnection
from shared.store.connections import store_errors
from shared.store.live import json_or
from shared.store.lua import Scripts
from shared.store.transactions import committed

log = structlog.get_logger(__name__)

PERMISSION_REPLIES = ("once", "always", "reject")
MAX_MESSAGE_CHARS = 10_000
MAX_BY_CHARS = 200
_REQUEST_RE = re.compile(r"(per|que)_?[0-9A-Za-z]{1,60}")


def parse_request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_RE.fullmatch(value):
        raise InvalidInput(f"invalid request id {value!r}: expected OpenCode's per_… or que_… id")
    return value


def parse_by(value: object) -> str | None:
    """Who answered, stored as given in `answered_by` (a text column, like `server` and `directory`, that people
    filter on and read: not escaped as OpenCode's content is), so U+0000, which PostgreSQL's text refuses, and a
    lone surrogate are InvalidInput before anything is written."""
    if value is None:
        return None
    by = parse_text(value, "--by")
    if not by.strip() or len(by) > MAX_BY_CHARS:
        raise InvalidInput(f"--by must be 1-{MAX_BY_CHARS} characters")
    if "\x00" in by:
        raise InvalidInput("--by holds U+0000, which PostgreSQL cannot store")
    return by


def parse_message(value: object) -> str | None:
    """The message of a rejection: text for the model, kept in the answer's JSON as it is (a lone surrogate too)."""
    if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_MESSAGE_CHARS):
        raise InvalidInput(f"the message must be a string of 1-{MAX_MESSAGE_CHARS} characters")
    return value


def parse_choice_groups(choices: object) -> list[list[str]]:
    """One group of labels per question, as lists of strings; a group given as one string is that one label (or
    labels separated by commas, as the CLI gives them). Checked before anything is read or written."""
    if isinstance(choices, str | bytes | Mapping) or not isinstance(choices, Sequence):
        raise InvalidInput(f"choices must be a list of label groups, one per question, not {type(choices).__name__}")
    groups = []
    for number, group in enumerate(choices, 1):
        labels = [group] if isinstance(group, str) else group
        if isinstance(labels, bytes | Mapping) or not isinstance(labels, Sequence):
            raise InvalidInput(
                f"the choice for question {number} must be a label or a list of labels, not {type(group).__name__}"
            )
        odd = [label for label in labels if not isinstance(label, str)]
        if odd:
            raise InvalidInput(f"the labels for question {number} must be strings, not {type(odd[0]).__name__}")
        groups.append(list(labels))
    return groups


def parse_choices(entry: Mapping[str, Any], choices: Sequence[Sequence[str]]) -> list[list[str]]:
    """The answers OpenCode takes for this question request; InvalidInput naming what does not fit."""
    questions = [object_of(q) for q in list_of(entry.get("questions"))]
    if len(choices) != len(questions):
        raise InvalidInput(
            f"request {entry['id']} asks {len(questions)} question(s): give one --choice per question, in order"
            f" (got {len(choices)})"
        )
    answers = []
    for number, (question, group) in enumerate(zip(questions, choices, strict=True), 1):
        # an option without a string label (an odd OpenCode) offers nothing to pick: never the label 'None'
        offered = [object_of(o).get("label") for o in list_of(question.get("options"))]
        labels = [label for label in offered if isinstance(label, str)]
        picked = list(group)
        if len(picked) == 1 and picked[0] not in labels and question.get("multiple"):
            picked = [label.strip() for label in picked[0].split(",")]  # the CLI's `--choice 'Red,Blue'`
        if not picked or (len(picked) > 1 and not question.get("multiple")):
            raise InvalidInput(f"question {number} ({question.get('header')!r}) takes exactly one choice")
        for label in picked:
            if label not in labels:
                shown = ", ".join(repr(x) for x in labels)
                raise InvalidInput(f"{label!r} is not an option of question {number}; the options are {shown}")
        answers.append(picked)
    return answers


async def reply(
    redis: Redis,
    db: PgConnection,
    session_id: str,
    request_id: str,
    reply: str,
    *,
    message: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """Answer a permission request: `once`, `always` or `reject` (with an optional message for the model)."""
    sid, rid = parse_session_id(session_id), parse_request_id(request_id)
    if reply not in PERMISSION_REPLIES:
        raise InvalidInput(f"invalid reply {reply!r}: expected one of {', '.join(PERMISSION_REPLIES)}")
    message, by = parse_message(message), parse_by(by)
    entry = await _waiting(redis, db, sid, rid)
    if entry["kind"] != "permission":
        raise InvalidInput(f"request {rid} is a question: answer it with `opencode-sessions answer`")
    body = {"reply": reply, **({"message": message} if message else {})}
    return await submit(redis, db, sid, entry, body, by)


async def answer(
    redis: Redis,
    db: PgConnection,
    session_id: str,
    request_id: str,
    *,
    choices: Sequence[Sequence[str]] = (),
    reject: bool = False,
    by: str | None = None,
) -> dict[str, Any]:
    """Answer a question request with one group of labels per question, or reject (dismiss) it."""
    sid, rid = parse_session_id(session_id), parse_request_id(request_id)
    if not isinstance(reject, bool):
        raise InvalidInput(f"reject must be True or False, not {type(reject).__name__}")
    groups = parse_choice_groups(choices) if choices is not None else []
    if reject == bool(groups):
        raise InvalidInput("give either the choices or reject, not both and not neither")
    by = parse_by(by)
    entry = await _waiting(redis, db, sid, rid)
    if entry["kind"] != "question":
        raise InvalidInput(f"request {rid} is a permission request: answer it with `opencode-sessions reply`")
    body: dict[str, Any] = {"reject": True} if reject else {"answers": parse_choices(entry, groups)}
    return await submit(redis, db, sid, entry, body, by)


async def submit(
    redis: Redis, db: PgConnection, sid: SessionId, entry: Mapping[str, Any], body: Mapping[str, Any], by: str | None
) -> dict[str, Any]:
    """Record the answer in PostgreSQL, then hand it to the owner (the poller's timeout uses this too)."""
    now = now_ms()
    async with committed(db):  # whatever the caller's connection mode (shared.store.transactions)
        row = await requests.record_answer(db, sid, entry, body, by, now)
    if row is None:
        recorded = await _recorded(db, str(entry["id"]))
        if recorded is not None and recorded.session_id == sid:
            await _hand_over(redis, sid, recorded)
        raise Conflict(_answered_already(sid, str(entry["id"]), recorded))
    with store_errors("Redis"):
        stored = await Scripts(redis).answer(sid, str(entry["id"]), dumps({"kind": entry["kind"], **body}))
    if stored == 0:
        raise Conflict(f"session {sid} ended before the answer to {entry['id']} could be given")
    log.info("request_answered", session_id=sid, request_id=entry["id"], by=by)
    return {
        "sessionId": sid,
        "requestId": entry["id"],
        "kind": entry["kind"],
        "answer": dict(body),
        "by": by,
        "answeredAt": now,
    }


async def _waiting(redis: Redis, db: PgConnection, sid: SessionId, rid: str) -> dict[str, Any]:
    """The live state's entry for the request; NotFound or Conflict (one line saying which) when it waits not."""
    with store_errors("Redis"):
        raw = await redis.hget(keys.session(sid), "pending")
    pending = json_or(as_text(raw) if raw else None, list, [])  # was: a field not JSON: unexpected JSONDecodeError
    found = next((e for e in pending if isinstance(e, dict) and e.get("id") == rid), None)
    if found is not None:
        return found
    row = await _recorded(db, rid)
    if row is not None and row.session_id == sid:
        raise Conflict(_answered_already(sid, rid, row))
    raise NotFound(f"session {sid} has no pending request {rid}")


async def _recorded(db: PgConnection, rid: str) -> requests.RequestRow | None:
    async with committed(db, reads_only=True):
        return await requests.fetch(db, rid)


async def _hand_over(redis: Redis, sid: SessionId, row: requests.RequestRow) -> None:
    """An answer recorded before but never handed to the owner (Redis was unreachable, or the process died,
    between the two writes) is handed over now (at most once: the job takes an answer only if it has none), or
    the run would wait for ever on an answer that every later one is refused for."""
    if not isinstance(row.answer, dict) or row.outcome is not None:
        return
    with store_errors("Redis"):
        handed = await Scripts(redis).answer(sid, row.id, dumps({"kind": row.kind, **row.answer}))
    if handed == 1:
        log.warning("recorded_answer_handed_over", session_id=sid, request_id=row.id, by=row.answered_by)


def _answered_already(sid: SessionId, rid: str, row: requests.RequestRow | None) -> str:
    """Why the request takes no answer now (`row`: its record, if any)."""
    if row is not None and row.session_id != sid:
        return f"request {rid} is recorded for another session ({row.session_id}): OpenCode listed one id under both"
    if row is not None and row.answer is not None:
        who = f" by {row.answered_by}" if row.answered_by else ""
        when = row.answered_at.isoformat(sep=" ", timespec="seconds") + " UTC" if row.answered_at else ""
        if row.outcome == "gone":  # OpenCode refused it, or the run ended first: not `answered`
            return f"request {rid} no longer waits: the answer given{who} at {when} was not taken by OpenCode"
        return f"request {rid} was already answered{who} at {when}".strip()
    return f"request {rid} no longer waits for an answer"
