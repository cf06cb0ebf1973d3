"""shared.commands (enqueue, send, cancel) against real Redis, PostgreSQL and the OpenCode simulator; no poller."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared import commands
from shared.errors import Conflict, InvalidInput, NotFound, Unavailable
from shared.ids import SessionId, TicketId, parse_message_id, parse_session_id
from shared.store import archive, keys, queueable
from shared.store.archive import LAYER_KEY, ArchiveRow, to_epoch_ms
from shared.store.live import read_record
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

UNKNOWN = SessionId("ses_000000000000AAAAAAAAAAAAAA")  # the ses_ form, but no store has it


async def row_of(db: Any, sid: str) -> ArchiveRow | None:
    return await archive.fetch(db, SessionId(sid))


async def row_count(db: Any) -> int:
    cur = await db.execute("SELECT count(*) FROM opencode_sessions")
    return int((await cur.fetchone())[0])


async def opencode_sessions(simulator_url: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        response = await client.get("/session")
        response.raise_for_status()
        sessions: list[Any] = response.json()
        return sessions


async def redis_keys(redis: Any) -> set[str]:
    return {k.decode() for k in await redis.keys("*")}


def text(mapping: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


async def insert_archived(db: Any, sid: str, status: str, *, ticket: str | None = None, layer: Any = None) -> None:
    metadata = {"owner": "tests", LAYER_KEY: layer or {"title": "old", "prompts": [], "epoch": 3}}
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, completed_at)"
        " VALUES (%s, %s, 'chat', %s, '[]', %s, CASE WHEN %s IN ('pending', 'running') THEN NULL ELSE now() END)",
        (sid, ticket, status, Jsonb(metadata), status),
    )


BAD_ENQUEUES = {
    "unknown type": {"session_type": "bogus"},
    "empty type": {"session_type": ""},
    "ticket with a space": {"ticket_id": "a b"},
    "ticket with a colon": {"ticket_id": "T:1"},
    "empty ticket": {"ticket_id": ""},
    "ticket too long": {"ticket_id": "T" * 129},
    "empty prompt": {"prompt": ""},
    "blank prompt": {"prompt": " \n\t"},
    "prompt too long": {"prompt": "x" * (commands.MAX_PROMPT_CHARS + 1)},
    "blank title": {"title": "   "},
    "title too long": {"title": "t" * (commands.MAX_TITLE_CHARS + 1)},
    "reserved metadata key": {"metadata": {"sessionLayer": {"epoch": 99}}},
    "metadata too large": {"metadata": {"blob": "x" * (commands.MAX_METADATA_BYTES + 1)}},
}


@pytest.mark.parametrize("bad", BAD_ENQUEUES.values(), ids=BAD_ENQUEUES.keys())
async def test_invalid_enqueue_raises_before_anything_is_written(redis, db, opencode, simulator_url, bad):
    call = {"session_type": "ask", "ticket_id": "T-1", "prompt": "ECHO hi", **bad}
    with pytest.raises(InvalidInput):
        await commands.enqueue(redis, db, opencode, **call)
    assert await opencode_sessions(simulator_url) == []
    assert await row_count(db) == 0
    assert await redis_keys(redis) == set()


@pytest.mark.parametrize("metadata", [[1, 2], "not an object"], ids=["list", "string"])
async def test_metadata_that_is_not_an_object_is_invalid_input(redis, db, opencode, simulator_url, metadata):
    with pytest.raises(InvalidInput):
        await commands.enqueue(redis, db, opencode, session_type="ask", metadata=metadata)
    assert await opencode_sessions(simulator_url) == []


def test_parse_metadata_accepts_only_json_objects_without_the_reserved_key():
    assert commands.parse_metadata('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for bad in ("{bad", "[1]", '"text"', "null", "3", '{"sessionLayer": 1}'):
        with pytest.raises(InvalidInput):
            commands.parse_metadata(bad)


def test_parse_metadata_refuses_numbers_json_and_postgresql_cannot_carry():
    """From the Python API as from the CLI: NaN, the infinities, and integers too long to write."""
    fine = {"a": [1.5, -(10**999), True, {"b": 10**999}]}
    assert commands.parse_metadata(fine) is fine
    for bad in ({"a": float("nan")}, {"a": [{"b": float("-inf")}]}, {"a": 10**1000}, {"a": [-(10**5000)]}):
        with pytest.raises(InvalidInput, match="metadata holds"):
            commands.parse_metadata(bad)


async def test_enqueue_writes_the_row_and_the_live_state_together(redis, db, opencode, simulator_url):
    user_meta = {"source": "tests", "nested": {"n": [1, 2], "ok": True}}
    updates = redis.pubsub()
    await updates.subscribe(keys.LIVE_UPDATES)
    confirmed = await updates.get_message(timeout=5.0)  # subscribed before anything is published
    assert confirmed is not None and confirmed["type"] == "subscribe"
    state = await commands.enqueue(
        redis,
        db,
        opencode,
        session_type="chat",
        ticket_id="T-42",
        prompt="ECHO hello",
        title="A title",
        metadata=user_meta,
    )
    sid = SessionId(state["sessionId"])
    assert parse_session_id(sid) == sid
    assert state["status"] == "pending" and state["live"] is True and state["seq"] == 1
    assert (state["ticketId"], state["sessionType"], state["title"]) == ("T-42", "chat", "A title")
    assert state["metadata"] == user_meta and state["messages"] == [] and state["error"] is None

    # OpenCode: the session exists with its title, and nothing was prompted yet (that is the poller's job)
    [created] = await opencode_sessions(simulator_url)
    assert created["id"] == sid and created["title"] == "A title"
    assert await opencode.messages(sid) == []

    # PostgreSQL: the pending row, user metadata kept beside our bookkeeping
    row = await row_of(db, sid)
    assert row is not None
    assert (row.ticket_id, row.session_type, row.status, row.messages, row.completed_at, row.error_message) == (
        "T-42",
        "chat",
        "pending",
        [],
        None,
        None,
    )
    assert {k: row.metadata[k] for k in user_meta} == user_meta
    layer = row.metadata[LAYER_KEY]
    assert layer["title"] == "A title" and layer["epoch"] == 0
    [prompt] = layer["prompts"]
    assert prompt["text"] == "ECHO hello" and parse_message_id(prompt["messageID"])
    assert abs(to_epoch_ms(row.started_at) - state["startedAt"]) <= 1

    # Redis: job, prompt, queue entry, state, live index and ticket pointer; nothing else
    assert await redis_keys(redis) == {
        keys.job(sid),
        keys.prompts(sid),
        keys.QUEUE,
        keys.session(sid),
        keys.LIVE_INDEX,
        keys.JOB_REVS,
        keys.ticket_active(TicketId("T-42")),
    }
    job = text(await redis.hgetall(keys.job(sid)))
    assert job["sessionId"] == sid and job["ticketId"] == "T-42" and job["sessionType"] == "chat"
    assert (job["cancel"], job["epoch"], job["promptsRev"], job["title"]) == ("0", "0", "0", "A title")
    assert [json.loads(p) for p in await redis.lrange(keys.prompts(sid), 0, -1)] == [prompt]
    fields = text(await redis.hgetall(keys.session(sid)))
    assert (fields["status"], fields["sessionType"], fields["ticketId"], fields["seq"]) == (
        "pending",
        "chat",
        "T-42",
        "1",
    )
    assert json.loads(fields["metadata"]) == user_meta
    assert await redis.zscore(keys.QUEUE, sid) is not None
    assert await redis.zscore(keys.LIVE_INDEX, sid) == state["startedAt"]
    assert await redis.get(keys.ticket_active(TicketId("T-42"))) == sid.encode()

    events = []
    while (message := await updates.get_message(timeout=1.0)) is not None:
        events.append(json.loads(message["data"]))
    await updates.aclose()
    assert [(e["type"], e["sessionId"], e["seq"]) for e in events] == [("appeared", sid, 1)]


async def test_enqueue_without_ticket_or_prompt_queues_an_empty_job(redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="admin")
    sid = SessionId(state["sessionId"])
    assert await redis_keys(redis) == {keys.job(sid), keys.QUEUE, keys.session(sid), keys.LIVE_INDEX, keys.JOB_REVS}
    assert text(await redis.hgetall(keys.job(sid)))["ticketId"] == ""
    row = await row_of(db, sid)
    assert row is not None and row.ticket_id is None and row.session_type == "admin"
    assert row.metadata == {LAYER_KEY: {"title": None, "prompts": [], "epoch": 0}}
    assert state["metadata"] == {}


@pytest.mark.parametrize("session_id", ["", "bad-id", "ses_short", "ses_" + "A" * 26 + ":x", "msg_" + "A" * 26])
async def test_invalid_session_ids_are_invalid_input(redis, db, session_id):
    with pytest.raises(InvalidInput):
        await commands.send(redis, db, session_id, "ECHO hi")
    with pytest.raises(InvalidInput):
        await commands.cancel(redis, db, session_id)
    assert await redis_keys(redis) == set()


async def test_send_of_an_empty_prompt_is_invalid_input_and_writes_nothing(redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO first")
    sid = SessionId(state["sessionId"])
    for empty in ("", "  \n"):
        with pytest.raises(InvalidInput):
            await commands.send(redis, db, sid, empty)
    assert await redis.llen(keys.prompts(sid)) == 1
    assert text(await redis.hgetall(keys.job(sid)))["promptsRev"] == "0"


async def test_send_to_an_unknown_session_is_not_found_and_writes_nothing(redis, db):
    with pytest.raises(NotFound):
        await commands.send(redis, db, UNKNOWN, "ECHO hi")
    assert await redis_keys(redis) == set()
    assert await row_count(db) == 0


async def test_send_to_a_live_session_appends_the_prompt(redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO first")
    sid = SessionId(state["sessionId"])
    message_id = await commands.send(redis, db, sid, "ECHO second")
    queued = [json.loads(p) for p in await redis.lrange(keys.prompts(sid), 0, -1)]
    assert [p["text"] for p in queued] == ["ECHO first", "ECHO second"]
    assert queued[1]["messageID"] == message_id and queued[0]["messageID"] < message_id
    assert text(await redis.hgetall(keys.job(sid)))["promptsRev"] == "1"
    assert [p["text"] for p in (await row_of(db, sid)).prompts] == ["ECHO first", "ECHO second"]  # for the backstop


async def test_a_revived_session_goes_on_past_every_seq_of_its_earlier_run(redis, db):
    """A client that resumes with the Last-Event-ID of the earlier run never finds it equal to the new run's seq
    (the gateway would send it no snapshot: it would apply the new run's updates to the old run's state). Was: a
    revived live state started at seq 1 again."""
    sid = SessionId("ses_111111111111BBBBBBBBBBBBSQ")
    await insert_archived(db, sid, "completed", layer={"title": "old", "prompts": [], "epoch": 3, "seq": 41})
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.updates(sid))
        await commands.send(redis, db, sid, "ECHO again")
        reset = await wait_for(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=1), timeout=10)
    assert json.loads(reset["data"]) == {"seq": 42, "type": "reset", "sessionId": sid}
    assert text(await redis.hgetall(keys.session(sid)))["seq"] == "42"


async def test_send_to_an_archived_session_revives_it(redis, db):
    sid = SessionId("ses_111111111111BBBBBBBBBBBBBB")
    await insert_archived(db, sid, "completed", ticket="T-5")
    message_id = await commands.send(redis, db, sid, "ECHO again")
    row = await row_of(db, sid)
    assert row is not None and row.status == "pending" and row.completed_at is None
    assert row.metadata["owner"] == "tests"
    assert row.metadata[LAYER_KEY]["prompts"] == [{"messageID": message_id, "text": "ECHO again"}]
    job = text(await redis.hgetall(keys.job(sid)))
    assert (job["epoch"], job["cancel"], job["ticketId"], job["title"]) == ("3", "0", "T-5", "old")
    assert [json.loads(p)["messageID"] for p in await redis.lrange(keys.prompts(sid), 0, -1)] == [message_id]
    assert json.loads(text(await redis.hgetall(keys.session(sid)))["metadata"]) == {"owner": "tests"}
    assert await redis.get(keys.ticket_active(TicketId("T-5"))) == sid.encode()


async def test_cancel_of_a_live_session_is_requested(redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi")
    sid = SessionId(state["sessionId"])
    assert await commands.cancel(redis, db, sid) == "requested"
    job = text(await redis.hgetall(keys.job(sid)))
    assert job["cancel"] == "1" and job["promptsRev"] == "1"
    assert (await row_of(db, sid)).status == "pending"  # the poller, not cancel, archives it


@pytest.mark.parametrize("status", ["completed", "error", "cancelled"])
async def test_cancel_of_an_archived_finished_session_is_a_conflict(redis, db, status):
    sid = SessionId("ses_222222222222CCCCCCCCCCCCCC")
    await insert_archived(db, sid, status)
    with pytest.raises(Conflict, match=status):
        await commands.cancel(redis, db, sid)
    assert await redis_keys(redis) == set()
    assert (await row_of(db, sid)).status == status


async def test_cancel_of_an_unknown_session_is_not_found(redis, db):
    with pytest.raises(NotFound):
        await commands.cancel(redis, db, UNKNOWN)
    assert await redis_keys(redis) == set()


async def test_cancel_of_a_pending_row_whose_live_state_was_lost_queues_it_cancelled(redis, db):
    sid = SessionId("ses_333333333333DDDDDDDDDDDDDD")
    await insert_archived(db, sid, "pending")
    assert await commands.cancel(redis, db, sid) == "requested"
    job = text(await redis.hgetall(keys.job(sid)))
    assert job["cancel"] == "1" and int(job["epoch"]) > 3  # past any claim of the run Redis lost
    assert await redis.zscore(keys.QUEUE, sid) is not None


async def test_send_to_a_running_session_redis_lost_goes_on_past_the_lost_runs_seq_and_epoch(redis, db):
    """The row says running at seq 5, but its live run wrote on past it before Redis lost it. Was: revived at seq 6
    and epoch 3, which a client resuming with an id of the lost run, or the lost run's owner, could still hold."""
    sid = SessionId("ses_333333333333DDDDDDDDDDDDDE")
    await insert_archived(db, sid, "running", layer={"title": "old", "prompts": [], "epoch": 3, "seq": 5})
    seconds, micros = await redis.time()
    await commands.send(redis, db, sid, "ECHO again")
    floor_ms = int(seconds) * 1000 + int(micros) // 1000
    record = await read_record(redis, sid)
    assert record is not None and record.state.seq >= floor_ms * queueable.LOST_RUN_SEQ_PER_MS
    assert int(text(await redis.hgetall(keys.job(sid)))["epoch"]) >= floor_ms


async def test_cancel_is_recorded_in_the_row_for_the_backstop(redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi")
    sid = SessionId(state["sessionId"])
    assert not (await row_of(db, sid)).cancel_requested
    assert await commands.cancel(redis, db, sid) == "requested"
    row = await row_of(db, sid)
    assert row.cancel_requested and row.metadata[LAYER_KEY]["cancel"] is True
    assert [p["text"] for p in row.prompts] == ["ECHO hi"] and row.epoch == 0  # the rest of the layer is kept


async def test_cancel_when_postgres_is_down_is_unavailable_and_leaves_redis_alone(redis, db, opencode, schema):
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi")
    sid = SessionId(state["sessionId"])
    before = {key: await redis.dump(key) for key in await redis.keys("*")}
    async with await psycopg.AsyncConnection.connect(schema, autocommit=True) as gone:
        await db.execute("SELECT pg_terminate_backend(%s)", (gone.info.backend_pid,))  # PostgreSQL drops it
        with pytest.raises(Unavailable, match=r"^PostgreSQL is unreachable"):
            await commands.cancel(redis, gone, sid)
    assert {key: await redis.dump(key) for key in await redis.keys("*")} == before
    assert text(await redis.hgetall(keys.job(sid)))["cancel"] == "0"
    assert not (await row_of(db, sid)).cancel_requested


async def test_send_to_an_archived_cancelled_session_forgets_the_old_cancel(redis, db):
    sid = SessionId("ses_444444444444EEEEEEEEEEEEEE")
    await insert_archived(db, sid, "cancelled", layer={"title": "old", "prompts": [], "epoch": 2, "cancel": True})
    await commands.send(redis, db, sid, "ECHO again")
    row = await row_of(db, sid)
    assert row.status == "pending" and not row.cancel_requested
    assert text(await redis.hgetall(keys.job(sid)))["cancel"] == "0"


async def test_a_session_that_cannot_be_recorded_is_taken_back_from_opencode(
    redis, opencode, simulator_url, fresh_database
):
    """OpenCode creates the session before PostgreSQL records it: a failed insert must not leave it behind."""
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as db:  # no table in it
        with pytest.raises(psycopg.errors.UndefinedTable):
            await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO lost")
    assert await opencode_sessions(simulator_url) == []
    assert await redis_keys(redis) == set()


async def test_send_to_an_archived_row_of_another_shape_refuses_it_before_reopening_it(redis, db):
    """Was: the row was reopened (pending, the prompt recorded), then the revival refused it: nothing was queued,
    and the backstop passed over the row on every pass from then on."""
    sid = SessionId("ses_111111111111BBBBBBBBBBBBEP")
    await insert_archived(db, sid, "completed", layer={"title": "old", "prompts": [], "epoch": "x"})
    with pytest.raises(InvalidInput, match="epoch"):
        await commands.send(redis, db, sid, "ECHO again")
    row = await row_of(db, sid)
    assert (row.status, row.prompts) == ("completed", [])
    assert await redis_keys(redis) == set()


async def test_a_revived_session_keeps_counting_what_its_earlier_runs_used(redis, db):
    """Was: zero in the live state until a poller claimed it and saw a message change (unbounded while pollers are
    down): ticket and usage totals dropped the session's earlier runs meanwhile."""
    sid = SessionId("ses_111111111111BBBBBBBBBBBBUS")
    await insert_archived(db, sid, "completed")
    await db.execute(
        "UPDATE opencode_sessions SET tokens_input = 100, tokens_output = 20, cost = 0.25, steps = 1 WHERE id = %s",
        (sid,),
    )
    await commands.send(redis, db, sid, "ECHO again")
    usage = json.loads(text(await redis.hgetall(keys.session(sid)))["usage"])
    assert usage == {
        "tokens": {"input": 100, "output": 20, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        "cost": 0.25,
        "steps": 1,
    }
