"""Long sessions (thousands of messages, tool outputs of megabytes) read by many clients at once: a reload storm reads
the session once per wave of clients, not once per client, and never decodes its messages (shared.store.live)."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gateway import endpoints, session_reads
from gateway.session_reads import SESSION_READS, SessionRead, SessionReads
from gateway.state import GatewayState
from shared import commands
from shared.cli.stream import aiter_events
from shared.ids import SessionId
from shared.models import dumps, dumps_bytes, loads, part_key
from shared.store import keys
from shared.store.live import read_record, read_session_json
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio
SID = SessionId("ses_" + "b" * 26)
LINE = "src/app/module.py:120: warning: unused import \u2014 a build log line, as `cat` shows it\u2028\n"


def transcript(messages: int, output_bytes: int) -> list[dict[str, Any]]:
    """User prompts and assistant steps, each step a `bash` tool part whose output is `output_bytes` long."""
    out = []
    for i in range(messages):
        mid = f"msg_{i:012x}AAAAAAAAAAAAAA"
        info = {"id": mid, "sessionID": SID, "role": "user" if i % 2 == 0 else "assistant", "time": {"created": i}}
        parts: list[dict[str, Any]] = [
            {"id": f"prt_{i:012x}A0AAAAAAAAAA", "sessionID": SID, "messageID": mid, "type": "text", "text": f"step {i}"}
        ]
        if i % 2:
            output = (LINE * (output_bytes // len(LINE) + 1))[:output_bytes]
            state = {"status": "completed", "input": {"command": "cat build.log"}, "output": output, "title": "cat"}
            tool = {"id": f"prt_{i:012x}A1AAAAAAAAAA", "sessionID": SID, "messageID": mid, "type": "tool"}
            parts.append(tool | {"callID": f"call_{i}", "tool": "bash", "state": state})
        out.append({"info": info, "parts": parts})
    return out


async def store_live(redis: Redis, messages: list[dict[str, Any]], **fields: str) -> None:
    """The live state as the poller's scripts leave it: the state hash, message infos and parts by key."""
    state = {"sessionId": SID, "sessionType": "chat", "status": "running", "seq": "7", "startedAt": "1"}
    await redis.hset(keys.session(SID), mapping=state | {"updatedAt": "2", "ticketId": "T-1"} | fields)
    await redis.hset(keys.session_messages(SID), mapping={m["info"]["id"]: dumps(m["info"]) for m in messages})
    parts = {part_key(p): dumps(p) for m in messages for p in m["parts"]}
    if parts:
        await redis.hset(keys.session_parts(SID), mapping=parts)


async def test_the_stored_json_is_the_session_the_decoded_record_gives(redis):
    """Order by id, a part whose ids need escaping in its key, a message without parts, a part of no message."""
    messages = transcript(5, 300)
    odd = {"id": "prt_a/b%c", "sessionID": SID, "messageID": messages[1]["info"]["id"], "type": "text", "text": "x"}
    messages[1]["parts"].append(odd)
    messages.append({"info": {"id": "msg_zzzz", "sessionID": SID, "role": "user"}, "parts": []})
    await store_live(redis, messages[::-1])
    await redis.hset(keys.session_parts(SID), "msg_gone/prt_1", dumps({"id": "prt_1", "messageID": "msg_gone"}))
    record = await read_record(redis, SID)
    session = await read_session_json(redis, SID)
    assert record is not None and session is not None
    assert isinstance(session["messages"], orjson.Fragment)  # the stored bytes, never decoded
    assert loads(dumps(session)) == loads(dumps(record.to_session()))
    assert loads(dumps(session))["messages"][1]["parts"][-1] == odd


async def test_a_field_orjson_refuses_falls_back_to_decoded_messages(redis):
    """A lone surrogate in a running tool call (a tool output cut mid-character) is written by the standard library,
    which cannot write a Fragment: the messages are then decoded, as before."""
    await store_live(redis, transcript(3, 100), currentToolCalls='[{"output": "cut \\ud800"}]')
    session = await read_session_json(redis, SID)
    assert session is not None and isinstance(session["messages"], list)
    assert loads(dumps(session))["currentToolCalls"] == [{"output": "cut \ud800"}]
    await redis.delete(*keys.state_keys(SID))
    assert await read_session_json(redis, SID) is None


async def hgetall_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_a_reload_storm_on_a_long_session_reads_it_once_per_wave_not_per_client(make_gateway, redis, monkeypatch):
    """20 clients open the stream of a 6 MB session at once (a page reloaded by everyone watching it): each gets the
    whole snapshot, from a few shared reads, each encoded once. Was: 20 reads, each decoded and kept by its stream as
    long as it stayed open (~4 times the session's size each: 50 clients of an 8.6 MB session held 1.8 GB), and
    encoded for each client (~55 ms of the event loop per 9 MB and client)."""
    encoded: list[int] = []

    def counted(value: Any) -> bytes:
        encoded.append(len(result := dumps_bytes(value)))
        return result

    monkeypatch.setattr(session_reads, "dumps_bytes", counted)
    await store_live(redis, transcript(60, 200_000))
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        expected = (await client.get(f"/sessions/{SID}")).json()
        before = await hgetall_calls(redis)
        snapshots: list[Any] = []

        async def watch() -> None:
            async with client.stream("GET", f"/sessions/{SID}/stream") as response:
                async for event in aiter_events(response):
                    snapshots.append(event.data)
                    return

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(watch)
    reads = (await hgetall_calls(redis) - before) // 3  # a read is one MULTI of three HGETALLs
    assert snapshots == [expected] * 20
    assert len(expected["messages"]) == 60 and len(expected["messages"][59]["parts"][1]["state"]["output"]) == 200_000
    assert 1 <= reads <= 10, reads
    assert len(encoded) <= reads + 1 and min(encoded) > 6_000_000  # the storm's reads, and the GET's


class SlowReads:
    """A read that waits for `release`, numbered in the order they started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = anyio.Event()

    async def read(self) -> dict[str, Any]:
        self.started += 1
        number = self.started
        await self.release.wait()
        if number == 99:
            raise RuntimeError("unreachable")
        return {"read": number, "messages": []}


async def test_who_comes_while_a_session_is_read_gets_the_next_read_shared_never_an_older_one():
    """A stream subscribes, then reads: a read that started before it came could miss what was published between
    the two. So the readers that come during a read share the one after it: one object, which none can change."""
    reads, slow = SessionReads(limit=8), SlowReads()
    got: list[SessionRead] = []

    async def reader() -> None:
        got.append(await reads.read("ses_x", slow.read))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_until(lambda: slow.started == 1)
        for _ in range(5):
            tg.start_soon(reader)
        await anyio.sleep(0.05)
        assert slow.started == 1  # the next read waits for the one under way
        slow.release.set()
    assert sorted(item.session["read"] for item in got) == [1, 2, 2, 2, 2, 2]
    assert len({id(item) for item in got}) == 2
    with pytest.raises(TypeError):
        got[0].session["seq"] = 3  # type: ignore[index]


async def test_a_reader_that_leaves_or_fails_leaves_the_others_reading():
    """The client whose read the others joined disconnects (its task is cancelled), or its read fails: the others
    read again, on their own, rather than sharing its cancellation or its error."""
    reads = SessionReads(limit=1)
    blocker, slow = SlowReads(), SlowReads()
    got: list[SessionRead | None] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(reads.read, "ses_other", blocker.read)  # holds the only turn
        await wait_until(lambda: blocker.started == 1)
        async with anyio.create_task_group() as leaving:
            leaving.start_soon(reads.read, "ses_x", slow.read)  # waits for a turn
            await anyio.sleep(0.01)

            async def joiner() -> None:
                got.append(await reads.read("ses_x", slow.read))

            tg.start_soon(joiner)
            await anyio.sleep(0.01)
            leaving.cancel_scope.cancel()
        blocker.release.set()
        slow.release.set()
    assert [item.session for item in got if item is not None] == [{"read": 1, "messages": []}]

    async def failing() -> dict[str, Any]:
        raise RuntimeError("Redis said no")

    with pytest.raises(RuntimeError):
        await reads.read("ses_x", failing)
    again = await reads.read("ses_x", slow.read)
    assert again is not None and again.session == {"read": 2, "messages": []}


async def wait_until(check: Any) -> None:
    with anyio.fail_after(5):
        while not check():  # noqa: ASYNC110 - a counter, not an event
            await anyio.sleep(0.005)


async def test_a_run_whose_tool_printed_megabytes_is_mirrored_archived_and_served_whole(
    make_worker, make_gateway, redis, db, opencode
):
    """A `cat` of a big file (the simulator's BIGOUT): the 3 MB output goes through the poller, Redis and the
    archive to the gateway's reads as it was printed."""
    await make_worker()
    gateway = await make_gateway()
    sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="BIGOUT 3000000"))["sessionId"]
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:

        async def archived() -> dict[str, Any] | None:
            found = (await client.get(f"/sessions/{sid}")).json()
            return found if found["live"] is False else None

        session = await wait_for(archived, timeout=60, what="the archive")
    tools = [p for m in session["messages"] for p in m["parts"] if p["type"] == "tool"]
    assert session["status"] == "completed" and len(tools) == 1
    assert len(tools[0]["state"]["output"]) == 3_000_000 and tools[0]["state"]["output"].startswith("[build] ")


async def test_reads_of_archived_sessions_held_up_by_postgresql_hold_up_no_live_read(redis, db, opencode, monkeypatch):
    """Every archive read waits on a slow PostgreSQL. Was: they held all the process's read turns (a turn covered
    the Redis read and then the archive's), and the snapshot of a live session, which needs Redis alone, waited
    behind them."""
    live = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    postgresql_answers = anyio.Event()

    async def slow_archive(conn: Any, sid: SessionId) -> dict[str, Any] | None:
        await postgresql_answers.wait()
        return None

    monkeypatch.setattr(endpoints, "read_archived", slow_archive)
    pool: Any = SimpleNamespace(connection=lambda: nullcontext(None))
    monkeypatch.setattr(endpoints, "committed", lambda conn, reads_only: nullcontext())
    state = GatewayState(redis=redis, pool=pool, fanout=None, auth=None, metrics=None, slots=None)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        for n in range(2 * SESSION_READS):  # archived (or gone) sessions, each waiting on PostgreSQL
            tg.start_soon(endpoints.read_session, state, f"ses_{n:026d}")
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(10):
            session = (await endpoints.read_session(state, live)).session
        assert session["sessionId"] == live and session["live"] is True
        tg.cancel_scope.cancel()


async def test_head_of_a_stream_reads_no_messages(make_gateway, redis, db):
    """HEAD sends no body, so it reads what authorises it, the ticket, and no messages. Was: the whole session was
    read (and a live one's parts joined) then dropped: tens of MB per HEAD of a long session."""
    gateway = await make_gateway()
    await store_live(redis, transcript(40, 20_000))
    archived = SessionId("ses_" + "c" * 26)
    await db.execute(
        "INSERT INTO opencode_sessions (id, session_type, status, messages, metadata, completed_at)"
        " VALUES (%s, 'chat', 'completed', %s, '{}', now())",
        (archived, orjson.dumps(transcript(4, 10)).decode()),
    )
    await redis.config_resetstat()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for sid in (SID, archived):
            head = await client.head(f"/sessions/{sid}/stream")
            assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
        missing = await client.head(f"/sessions/ses_{'d' * 26}/stream")
        assert missing.status_code == 404
    stats = await redis.info("commandstats")
    assert "cmdstat_hgetall" not in stats and "cmdstat_hmget" in stats
