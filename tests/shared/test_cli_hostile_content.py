"""Hostile session content never drives the user's terminal: `show`, `watch` and `history` as processes, on a
session whose live state and archive hold ESC sequences, BEL, NUL, CR, backspace, DEL, C1 controls and bidi
overrides in its text, tool call, errors, ticket and requests. The output shows each as its escape; `--json`
stays exact."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.clock import now_ms
from shared.dev.simulator.server import serve_in_thread
from shared.ids import SessionId, TicketId
from shared.models import dumps
from shared.sessions import get_session
from shared.store import archive, keys, requests
from shared.store.live import LiveState
from tests.helpers import run_cli, single_error_line, sse_event, two_connection_gateway

pytestmark = pytest.mark.anyio

# The window title, clear screen, hidden text, NUL, backspace, a carriage return, DEL, a one-character CSI, a
# right-to-left override, an isolate and an OSC 8 hyperlink.
HOSTILE = "A\x1b]0;pwned\x07B\x1b[2JC\x1b[8mD\x00E\x08F\rG\x7fH\x9bI\u202eJ\u2066K\u2069L\x1b]8;;http://x\x1b\\M"
SHOWN = r"A\x1b]0;pwned\x07B\x1b[2JC\x1b[8mD\x00E\x08F\x0dG\x7fH\x9bI\u202eJ\u2066K\u2069L\x1b]8;;http://x\x1b\M"
# Where the CLI prints one line of it (errors), whitespace is collapsed first: the carriage return is a space.
SHOWN_ONE_LINE = SHOWN.replace(r"\x0d", " ")
HISTORY_SHOWN = r"A\x1b]0;pwned\x07B\x1b[2JC\x1b[8mD\x00E\x08F G\x7fH\x9bI\u202eJ\u2066K\u2069L\x1b]8;;http:/…"
TICKET = "T-\x1b[2J\u202e1"  # PostgreSQL keeps no NUL in a column: the ticket and the answerer hold none
TICKET_SHOWN = r"T-\x1b[2J\u202e1"
BY = "ops\x1b]0;x\x07\x9b"
BY_SHOWN = r"ops\x1b]0;x\x07\x9b"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SID = SessionId("ses_000000000000000000HOSTILE")
USER, ASSISTANT = "msg_00000000000000000000000001", "msg_00000000000000000000000002"


def raw_controls(text: str) -> list[str]:
    return UNSAFE.findall(text)


def requests_asked() -> tuple[dict[str, Any], dict[str, Any]]:
    """A permission request and a question, every text in them hostile (ids are unique: the table is shared)."""
    tag = uuid.uuid4().hex
    permission = {"kind": "permission", "id": f"per_{tag}", "askedAt": now_ms(), "tool": None}
    permission |= {"permission": HOSTILE, "patterns": [HOSTILE], "metadata": {"command": HOSTILE}, "always": []}
    question = {"kind": "question", "id": f"que_{tag}", "askedAt": now_ms(), "tool": None}
    options = [{"label": HOSTILE}, {"label": "Blue"}]
    question["questions"] = [{"question": HOSTILE, "header": "h", "options": options}]
    return permission, question


def messages() -> list[dict[str, Any]]:
    user = {"info": {"id": USER, "role": "user"}, "parts": [{"id": "prt_1", "type": "text", "text": HOSTILE}]}
    tool = {"id": "prt_3", "type": "tool", "tool": "bash\x1b[8m", "callID": "call_1"}
    tool["state"] = {"status": "error", "title": HOSTILE, "error": HOSTILE, "input": {}}
    error = {"name": "APIError", "data": {"message": HOSTILE}}
    parts = [
        {"id": "prt_2", "type": "reasoning", "text": HOSTILE},
        tool,
        {"id": "prt_4", "type": "text", "text": HOSTILE},
    ]
    assistant = {"info": {"id": ASSISTANT, "role": "assistant", "error": error}, "parts": parts}
    for message in (user, assistant):
        for part in message["parts"]:
            part["messageID"] = message["info"]["id"]
    return [user, assistant]


def state(pending: list[Any]) -> LiveState:
    return LiveState(
        session_id=SID,
        session_type="ask",
        status="waiting",
        ticket_id=TicketId(TICKET),
        title=HOSTILE,
        error=HOSTILE,
        started_at=now_ms(),
        pending=pending,
    )


async def write_live(redis: Any, pending: list[Any]) -> None:
    """The three hashes of a live session, as the poller leaves them."""
    await redis.hset(keys.session(SID), mapping=state(pending).encode() | {"seq": "5", "updatedAt": str(now_ms())})
    for message in messages():
        info = message["info"]
        await redis.hset(keys.session_messages(SID), info["id"], dumps(info))
        for part in message["parts"]:
            await redis.hset(keys.session_parts(SID), f"{info['id']}/{part['id']}", dumps(part))


async def archive_it(redis: Any, db: Any, asked: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The session ends in `error`: archived with its requests answered, its live state gone."""
    now = now_ms()
    assert await archive.upsert_fenced(
        db, state([]), 1, status="error", messages=messages(), error=HOSTILE, completed_ms=now, now_ms=now
    )
    permission, question = asked
    await requests.record_answer(db, SID, permission, {"reply": "reject", "message": HOSTILE}, BY, now)
    await requests.record_answer(db, SID, question, {"answers": [[HOSTILE]]}, BY, now)
    await redis.delete(*keys.state_keys(SID))


def session_lines(status: str, where: str) -> list[str]:
    """What `show` and `watch` print of the session's messages and errors, each control as its escape."""
    return [
        f"{SID}  {status}  ({where}, ask, ticket {TICKET_SHOWN})",
        f"  user      text: {SHOWN}",
        f"  assistant reasoning: {SHOWN}",
        rf"  assistant tool bash\x1b[8m [error] {SHOWN_ONE_LINE}: {SHOWN_ONE_LINE}",  # a title stays on its line
        f"  assistant text: {SHOWN}",
        f"  assistant error: {SHOWN_ONE_LINE}",
    ]


def pending_lines(permission: dict[str, Any], question: dict[str, Any]) -> list[str]:
    return [
        f"  waiting   permission {permission['id']}: {SHOWN_ONE_LINE} {SHOWN_ONE_LINE}",
        f"            answer: opencode-sessions reply {SID} {permission['id']} --once|--always|--reject"
        " [--message TEXT]",
        f"  waiting   question {question['id']}:",
        f"            1. {SHOWN_ONE_LINE} [{SHOWN_ONE_LINE} | Blue]",
        f"            answer: opencode-sessions answer {SID} {question['id']} --choice LABEL (or --reject)",
    ]


@pytest.fixture
def env(redis_url: str, schema: str, redis: Any, db: Any) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": schema}


async def test_show_and_history_print_controls_as_escapes(env, redis, db):
    asked = requests_asked()
    await write_live(redis, list(asked))
    live = await run_cli(["show", SID], env)
    assert (live.returncode, live.stderr) == (0, ""), live
    assert raw_controls(live.stdout) == []
    assert live.stdout.splitlines() == [
        *session_lines("waiting", "live"),
        f"session error: {SHOWN_ONE_LINE}",
        *pending_lines(*asked),
    ]
    exact = await run_cli(["show", SID, "--json"], env)  # machine output: exactly what the store holds
    # JSON escapes U+0000-U+001F; DEL, C1 and the bidi controls stay raw characters in its strings (see README)
    assert set(raw_controls(exact.stdout)) == {"\x7f", "\x9b", "\u202e", "\u2066", "\u2069"}
    assert json.loads(exact.stdout) == await get_session(redis, db, SID)

    await archive_it(redis, db, asked)
    ended = await run_cli(["show", SID], env)
    assert (ended.returncode, ended.stderr) == (0, ""), ended
    assert raw_controls(ended.stdout) == []
    permission, question = asked
    assert ended.stdout.splitlines() == [
        *session_lines("error", "archived"),
        f"session error: {SHOWN_ONE_LINE}",
        f"  request   permission {permission['id']} ({SHOWN_ONE_LINE}): reject by {BY_SHOWN} [unanswered]",
        f"  request   question {question['id']} (question): {SHOWN_ONE_LINE} by {BY_SHOWN} [unanswered]",
        "usage: 1 steps, tokens 0 input / 0 output / 0 reasoning / 0 cache read / 0 cache write, cost 0.0000",
    ]
    listed = await run_cli(["history"], env)
    assert (listed.returncode, listed.stderr) == (0, ""), listed
    assert raw_controls(listed.stdout) == []
    row = listed.stdout.splitlines()[1]  # the error, cut to 50 characters
    assert row.startswith(f"{SID}  ask ") and row.endswith(HISTORY_SHOWN)


async def test_watch_prints_controls_as_escapes_on_stdout_and_stderr(env, redis, db, make_gateway):
    """The live session (waiting on its requests), then its end: stdout holds the escapes, and so does the
    reconnect message on stderr that quotes what the gateway sent (an append to a part named with controls)."""
    asked = requests_asked()
    await write_live(redis, list(asked))
    live = await get_session(redis, db, SID)
    await archive_it(redis, db, asked)
    final = await get_session(redis, db, SID)
    append = {"messageID": ASSISTANT, "partID": HOSTILE, "field": "text", "offset": 0, "length": 1, "delta": "x"}
    gap = sse_event("update", {"seq": 6, "type": "update", "sessionId": SID, "appends": [append]}, 6)
    first = [sse_event("snapshot", live, 5), gap]
    second = [sse_event("snapshot", live, 5), sse_event("complete", final, 7)]
    seen: list[str | None] = []
    with serve_in_thread(two_connection_gateway(seen, first, second)) as url:
        watched = await run_cli(["watch", SID], env | {"GATEWAY_URL": url})
    assert seen == [None, None]  # out of step: the watch starts over from a snapshot
    assert watched.returncode == 0, watched
    assert raw_controls(watched.stdout) == [] and raw_controls(watched.stderr) == []
    assert watched.stdout.splitlines() == [
        *session_lines("waiting", "live"),
        *pending_lines(*asked),
        "status: error",
        f"session error: {SHOWN_ONE_LINE}",
    ]
    assert f"connection lost (out of step: an append to part {SHOWN}, which" in watched.stderr

    gateway = await make_gateway()  # the real one: an archived session is its snapshot, then `complete`
    archived = await run_cli(["watch", SID], env | {"GATEWAY_URL": gateway})
    assert (archived.returncode, archived.stderr) == (0, ""), archived
    assert archived.stdout.splitlines() == [
        *session_lines("error", "archived"),
        "status: error",
        f"session error: {SHOWN_ONE_LINE}",
    ]


async def test_an_error_quoting_the_server_is_one_line_of_escapes():
    app = Starlette(routes=[Route("/sessions/{sid}/stream", lambda _: JSONResponse({"error": HOSTILE}, 404))])
    with serve_in_thread(app) as url:
        result = await run_cli(["watch", SID], {"GATEWAY_URL": url})
    assert single_error_line(result, 1) == f"error: {SHOWN_ONE_LINE}"
    assert raw_controls(result.stderr) == []


LONE = "cut mid-character: \ud83d"  # a lone surrogate, as OpenCode may send one (its JSON escape, `\ud83d`)
LONE_SID = SessionId("ses_000000000000000000SURROGT")


async def test_json_output_writes_a_lone_surrogate_as_its_escape(env, redis, db, make_gateway):
    """UTF-8 cannot carry a lone surrogate: `--json` writes it as its JSON escape, as every JSON answer of ours does,
    and a JSON reader gets the very character back. Was: `show`, `watch`, `history` and `enqueue` with `--json`
    ended in `unexpected UnicodeEncodeError` (exit 1) on such a session."""
    live = LiveState(session_id=LONE_SID, session_type="ask", title="t", started_at=now_ms(), metadata={"n": LONE})
    user = {"info": {"id": USER, "role": "user"}, "parts": [{"id": "prt_1", "messageID": USER, "type": "text"}]}
    user["parts"][0]["text"] = LONE
    await redis.hset(keys.session(LONE_SID), mapping=live.encode() | {"seq": "3", "updatedAt": str(now_ms())})
    await redis.hset(keys.session_messages(LONE_SID), USER, dumps(user["info"]))
    await redis.hset(keys.session_parts(LONE_SID), f"{USER}/prt_1", dumps(user["parts"][0]))
    shown = await run_cli(["show", LONE_SID, "--json"], env)
    assert (shown.returncode, shown.stderr) == (0, ""), shown
    assert "\\ud83d" in shown.stdout and json.loads(shown.stdout) == await get_session(redis, db, LONE_SID)
    assert json.loads(shown.stdout)["messages"][0]["parts"][0]["text"] == LONE

    now = now_ms()
    assert await archive.upsert_fenced(db, live, 1, status="completed", messages=[user], completed_ms=now, now_ms=now)
    await redis.delete(*keys.state_keys(LONE_SID))
    listed = await run_cli(["history", "--json"], env)
    assert (listed.returncode, listed.stderr) == (0, ""), listed
    (row,) = [row for row in json.loads(listed.stdout)["sessions"] if row["sessionId"] == LONE_SID]
    assert row["metadata"]["n"] == LONE
    watched = await run_cli(["watch", LONE_SID, "--json"], env | {"GATEWAY_URL": await make_gateway()})
    assert (watched.returncode, watched.stderr) == (0, ""), watched
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [e["event"] for e in events] == ["snapshot", "complete"]
    assert events[0]["data"]["messages"][0]["parts"][0]["text"] == LONE
