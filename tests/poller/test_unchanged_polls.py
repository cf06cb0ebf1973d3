"""A tail poll whose body is byte for byte the last one is neither decoded nor compared — and a tail whose
write failed is not taken as already written; sessions that start together do not take their whole lists together;
a whole list decodes only what follows the messages it had settled, and still sees them change."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg_pool
import pytest
from redis.asyncio import Redis

from poller.archive import Archive
from poller.deps import TrackerDeps
from poller.job_board import JobBoard
from poller.metrics import Metrics
from poller.session_mirror import FULL_POLL_EVERY, SessionMirror
from poller.status_board import StatusBoard
from shared import commands
from shared.errors import Unavailable
from shared.ids import new_message_id
from shared.opencode.client import OpenCodeClient
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import Scripts
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def idle(opencode: OpenCodeClient, sid: str, count: int) -> None:
    async def done() -> bool:
        messages = await opencode.messages(sid)
        return (
            len(messages) == count
            and "completed" in messages[-1]["info"]["time"]
            and sid not in await opencode.status()
        )

    await wait_for(done, timeout=20, what=f"{count} messages, the run ended")


def mirror_deps(redis: Redis, opencode: OpenCodeClient, schema: str, metrics: Metrics) -> TrackerDeps:
    return TrackerDeps(
        redis=redis,
        scripts=Scripts(redis),
        opencode=opencode,
        archive=Archive(psycopg_pool.AsyncConnectionPool(schema, open=False)),  # not used by the mirror
        board=StatusBoard(opencode, 1.0),
        jobs=JobBoard(redis),
        poll_interval_s=0.5,
        retry_deadline_s=10.0,
        metrics=metrics,
    )


async def claimed_chat(redis: Redis, db: Any, opencode: OpenCodeClient) -> Lease:
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt=None)
    leases = await Scripts(redis).claim("replica-test", 60_000, 100)
    [lease] = [lease for lease in leases if lease.session_id == state["sessionId"]]
    return lease


async def test_the_same_tail_twice_is_not_decoded(opencode: OpenCodeClient, redis: Redis, db: Any) -> None:
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt=None)
    sid = state["sessionId"]
    await opencode.prompt_async(sid, message_id=new_message_id(), text="hello")
    await idle(opencode, sid, 2)
    first, digest = await opencode.messages_if_changed(sid, limit=4, digest=None)
    assert first == await opencode.messages(sid, limit=4)
    assert await opencode.messages_if_changed(sid, limit=4, digest=digest) == (None, digest)
    await opencode.prompt_async(sid, message_id=new_message_id(), text="again")
    await idle(opencode, sid, 4)
    changed, new_digest = await opencode.messages_if_changed(sid, limit=4, digest=digest)
    assert changed is not None and len(changed) == 4 and new_digest != digest


async def test_a_tail_whose_write_failed_is_written_by_the_next_identical_poll(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str
) -> None:
    lease = await claimed_chat(redis, db, opencode)
    sid = lease.session_id
    metrics = Metrics()
    mirror = await SessionMirror.load(mirror_deps(redis, opencode, schema, metrics), lease, spread=0)  # tail polls
    await mirror.write_poll(*await mirror.fetch())  # the first poll: the whole (empty) list
    await opencode.prompt_async(sid, message_id=new_message_id(), text="hello")
    await idle(opencode, sid, 2)

    messages, tail = await mirror.fetch()  # a tail poll with the answer in it
    assert tail is not None and len(tail) == 2
    await redis.execute_command("REPLICAOF", "127.0.0.1", "1")  # Redis refuses writes (READONLY), as in a failover
    try:
        with pytest.raises(Unavailable, match="read-only"):
            await mirror.write_poll(messages, tail)
    finally:
        await redis.execute_command("REPLICAOF", "NO", "ONE")
    record = await read_record(redis, sid)
    assert record is not None and record.messages() == []  # nothing of the answer was written

    await mirror.write_poll(*await mirror.fetch())  # the same bytes again: compared and written this time
    record = await read_record(redis, sid)
    assert record is not None and record.messages() == await opencode.messages(sid)
    unchanged = {"server": "default"}
    assert (
        metrics.registry.get_sample_value("poller_polls_unchanged_total", unchanged) == 0
    )  # not one yet (the series exists from the start)

    writes = mirror.writer.writes
    await mirror.write_poll(*await mirror.fetch())  # now they are known: neither decoded nor written
    assert mirror.writer.writes == writes
    assert metrics.registry.get_sample_value("poller_polls_unchanged_total", unchanged) == 1


async def test_sessions_started_together_take_their_whole_lists_at_different_polls(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str
) -> None:
    """The cadence is drift-free: whole-list polls that start in step stay in step, a burst every 20 polls."""
    lease = await claimed_chat(redis, db, opencode)
    deps = mirror_deps(redis, opencode, schema, Metrics())
    second_full_at = []
    for _ in range(12):  # twelve trackers of sessions claimed together (one session serves: each mirror polls alone)
        mirror = await SessionMirror.load(deps, lease)
        assert (await mirror.fetch())[1] is None  # the first poll takes the whole list
        polls = 0
        while (await mirror.fetch())[1] is not None:
            polls += 1
            assert polls < FULL_POLL_EVERY, "a whole list at least every FULL_POLL_EVERY polls"
        second_full_at.append(polls + 1)
    assert len(set(second_full_at)) > 1, second_full_at  # all twelve in step: 20^-11 with the spread
    for _ in range(FULL_POLL_EVERY - 1):  # after the spread, every FULL_POLL_EVERY polls as before
        assert (await mirror.fetch())[1] is not None
    assert (await mirror.fetch())[1] is None


async def test_whole_lists_decode_only_what_follows_the_settled_messages_and_still_see_them_change(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str, simulator_url: str
) -> None:
    """OpenCode's own edits of older messages (PATCH and DELETE of a part, DELETE of a message, as a client or a
    compaction makes them) reach Redis with the next whole-list poll, however many whole lists came before."""
    lease = await claimed_chat(redis, db, opencode)
    sid = lease.session_id
    metrics = Metrics()
    mirror = await SessionMirror.load(mirror_deps(redis, opencode, schema, metrics), lease, spread=0)
    for run in range(3):
        await opencode.prompt_async(sid, message_id=new_message_id(), text=f"question {run}")
        await idle(opencode, sid, 2 * (run + 1))
    settled = {"server": "default"}

    async def whole_list_poll() -> list[Any]:
        mirror.full_poll_next()
        await mirror.write_poll(*await mirror.fetch())
        messages = await opencode.messages(sid)
        record = await read_record(redis, sid)
        assert record is not None and record.messages() == messages
        return messages

    messages = await whole_list_poll()  # decoded in full: the head is taken
    assert metrics.registry.get_sample_value("poller_polls_settled_total", settled) == 0
    await whole_list_poll()
    assert metrics.registry.get_sample_value("poller_polls_settled_total", settled) == 1

    session = f"{simulator_url}/session/{sid}/message"
    first, second = messages[0], messages[1]
    edited = {**first["parts"][0], "text": "edited after the run"}
    async with httpx.AsyncClient() as http:
        response = await http.patch(f"{session}/{first['info']['id']}/part/{edited['id']}", json=edited)
        assert response.status_code == 200, response.text
        messages = await whole_list_poll()
        assert messages[0]["parts"][0]["text"] == "edited after the run"
        assert metrics.registry.get_sample_value("poller_polls_settled_total", settled) == 1  # decoded in full
        await whole_list_poll()
        assert metrics.registry.get_sample_value("poller_polls_settled_total", settled) == 2

        assert (await http.delete(f"{session}/{second['info']['id']}/part/{second['parts'][-1]['id']}")).json()
        await whole_list_poll()
        assert (await http.delete(f"{session}/{first['info']['id']}")).json()
        assert len(await whole_list_poll()) == 5

    # the list is now shorter than when the head was taken: a tail poll reaches back into it, and the next whole
    # list is decoded from there on, as the tail left it
    await opencode.prompt_async(sid, message_id=new_message_id(), text="one more")
    await idle(opencode, sid, 7)
    await mirror.write_poll(*await mirror.fetch())
    assert len(await whole_list_poll()) == 7


async def test_a_settled_message_a_tail_poll_saw_change_is_decoded_again_once_it_changes_back(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str, simulator_url: str
) -> None:
    """Once messages are removed, a tail poll reaches back into the settled ones: what it brings replaces them in
    the list the head stood for. Should they change back to the head's very bytes, the next whole list must not
    take the tail's version for them."""
    lease = await claimed_chat(redis, db, opencode)
    sid = lease.session_id
    mirror = await SessionMirror.load(mirror_deps(redis, opencode, schema, Metrics()), lease, spread=0)
    for run in range(3):
        await opencode.prompt_async(sid, message_id=new_message_id(), text=f"question {run}")
        await idle(opencode, sid, 2 * (run + 1))
    mirror.full_poll_next()
    await mirror.write_poll(*await mirror.fetch())  # six messages: the first two are settled

    messages = await opencode.messages(sid)
    session = f"{simulator_url}/session/{sid}/message"
    answer = messages[1]["parts"][-1]
    async with httpx.AsyncClient() as http:
        for message in messages[3:5]:
            assert (await http.delete(f"{session}/{message['info']['id']}")).json()
        part = f"{session}/{answer['messageID']}/part/{answer['id']}"
        assert (await http.patch(part, json={**answer, "text": "for a while"})).status_code == 200
        messages, tail = await mirror.fetch()
        assert tail is not None and tail[1]["parts"][-1]["text"] == "for a while"  # it reached back
        await mirror.write_poll(messages, tail)
        assert (await http.patch(part, json=answer)).status_code == 200  # as the head has it, byte for byte

    mirror.full_poll_next()
    await mirror.write_poll(*await mirror.fetch())
    record = await read_record(redis, sid)
    assert record is not None and record.messages() == await opencode.messages(sid)
