"""The event fast path: live text through the gateway, the fallback when /event drops, and OPENCODE_EVENTS=off."""

from __future__ import annotations

import copy
import itertools
import json
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import aiter_events, apply_update
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import TcpProxy, sim, wait_for

pytestmark = pytest.mark.anyio


def answer_text(state) -> str:
    texts = [
        p.get("text") or ""
        for m in state["messages"]
        if m["info"]["role"] == "assistant"
        for p in m["parts"]
        if p["type"] == "text"
    ]
    return texts[-1] if texts else ""


async def stream_texts(gateway: str, sid: str) -> tuple[list[str], dict]:
    """Every distinct text the answer had as the SSE client saw it, and the final (archived) session."""
    seen: list[str] = []
    state = None
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=60) as client,
        client.stream("GET", f"/sessions/{sid}/stream") as response,
    ):
        async for event in aiter_events(response):
            if event.name == "snapshot":
                state = copy.deepcopy(event.data)
            elif event.name == "update":
                apply_update(state, event.data)
            elif event.name == "complete":
                return seen, event.data
            if state is not None and (text := answer_text(state)) and (not seen or seen[-1] != text):
                seen.append(text)
    raise AssertionError("the stream ended without complete")


async def test_the_answer_grows_live_through_the_gateway(make_worker, make_gateway, redis, db):
    with serve_in_thread(create_simulator(1.0)) as url:
        async with OpenCodeClient(url) as oc:
            worker = await make_worker(opencode_url=url)
            gateway = await make_gateway()
            state = await commands.enqueue(redis, db, oc, session_type="ask", prompt="SLOW answer please")
            seen, final = await stream_texts(gateway, state["sessionId"])
            assert final["messages"] == await oc.messages(state["sessionId"])
    growing = [t for t in seen if t != answer_text(final)]
    assert len(growing) >= 3, seen  # at least three distinct states before the part ended
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(seen)), seen
    assert worker.router is not None and worker.router.connections == 1


async def test_a_cut_event_stream_loses_nothing(make_worker, redis, db, schema):
    with serve_in_thread(create_simulator(1.0)) as url:
        proxy = TcpProxy(urlsplit(url).port)
        async with OpenCodeClient(url) as oc, anyio.create_task_group() as tg:
            await tg.start(proxy.serve)
            worker = await make_worker(opencode_url=f"http://127.0.0.1:{proxy.port}")
            state = await commands.enqueue(redis, db, oc, session_type="ask", prompt="TOOL SLOW then text")
            sid = state["sessionId"]
            await wait_for(lambda: _connected(worker, 1), timeout=10, what="the event stream")
            await anyio.sleep(1.0)  # mid-run
            await proxy.cut()  # every connection, the /event stream included
            await wait_for(lambda: _connected(worker, 2), timeout=20, what="the event stream back")

            async def archived():
                cur = await db.execute("SELECT status, messages FROM opencode_sessions WHERE id = %s", (sid,))
                row = await cur.fetchone()
                return row if row and row[0] == "completed" else None

            _, messages = await wait_for(archived, timeout=40)
            assert messages == await oc.messages(sid)
            tg.cancel_scope.cancel()


async def _connected(worker, count):
    return worker.router.healthy and worker.router.connections >= count


async def test_events_off_polls_alone_and_never_opens_the_stream(make_worker, redis, db, opencode, simulator_url):
    worker = await make_worker(opencode_events=False)
    assert worker.router is None
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL off")

    async def archived():
        cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (state["sessionId"],))
        row = await cur.fetchone()
        return row and row[0] == "completed"

    await wait_for(archived, timeout=30)
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        stats = (await client.get("/__sim/stats")).json()
    assert stats["requests"].get("GET /event", 0) == 0


@pytest.mark.parametrize("prompt", ["ECHO done at once", "FAIL at once"])
async def test_opencode_reporting_idle_decides_completion_without_the_slow_cadence(
    make_worker, redis, db, opencode, prompt
):
    """With the message list fetched only every 120 s while the stream is healthy, a session still ends within the
    deadline: OpenCode's idle report (session.status idle / session.idle) is confirmed by one poll and decided on.
    FAIL: the first idle comes before the failed message is final (the poll must not end it as completed)."""
    await make_worker(poll_interval_s=0.5, poll_interval_events_s=120.0)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt)

    async def archived():
        cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (state["sessionId"],))
        row = await cur.fetchone()
        return row[0] if row and row[0] in ("completed", "error") else None

    assert await wait_for(archived, timeout=20, what="the session archived") == (
        "completed" if prompt.startswith("ECHO") else "error"
    )


async def test_a_quiet_tracker_acts_on_its_job_at_once(make_worker, redis, db):
    """While the stream carries the changes and nothing of ours waits, a tracker ticks only for its slow poll
    (120 s here). A bash command runs 8 s without an event; a cancel given meanwhile still reaches OpenCode at
    once, because the replica's job board wakes the tracker when its job changes.
    FAIL: without the wake the cancel waits for the command's end (its events) or the slow tick."""
    with serve_in_thread(create_simulator(0.5)) as url:  # half speed: the command runs 8 s
        async with OpenCodeClient(url) as opencode:
            await make_worker(opencode_url=url, poll_interval_s=0.05, poll_interval_events_s=120.0)
            state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW TOOL run")
            sid = state["sessionId"]

            async def command_running():
                parts = await redis.hvals(keys.session_parts(sid))
                return any(b'"tool":"bash"' in part and b'"status":"running"' in part for part in parts)

            await wait_for(command_running, timeout=20, what="the command running")
            assert await commands.cancel(redis, db, sid) == "requested"

            async def archived():
                cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
                row = await cur.fetchone()
                return row[0] if row and row[0] not in ("pending", "running") else None

            assert await wait_for(archived, timeout=5, what="the cancel acted on") == "cancelled"


async def test_the_event_stream_is_open_only_while_a_session_is_held(make_worker, redis, db, opencode):
    worker = await make_worker()
    assert worker.router is not None and worker.router.connections == 0  # nothing held: no /event connection

    async def archived(sid: str):
        cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
        row = await cur.fetchone()
        return row if row and row[0] == "completed" else None

    for opened in (1, 2):
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW one at a time")

        async def connected(count: int = opened) -> bool:
            return worker.router.healthy and worker.router.connections == count

        await wait_for(connected, timeout=10, what="the stream opened for the session")
        await wait_for(lambda sid=state["sessionId"]: archived(sid), timeout=30, what="the session archived")
        assert worker.router.connections == opened  # one connection for the whole run

        async def closed() -> bool:
            return not worker.router.healthy and not worker.held

        await wait_for(closed, timeout=10, what="the stream closed after the last session")


ODD_EVENTS = [  # each names the session, so it reaches the tracker; each lacks or twists what the mirror reads
    {"type": "message.part.updated", "properties": {"part": {"type": "text", "text": "no id"}}},
    {"type": "message.part.updated", "properties": {"part": {"id": 7, "messageID": ["msg"], "type": "text"}}},
    {"type": "message.part.updated", "properties": {"part": "not an object"}},
    {"type": "message.updated", "properties": {"info": {"role": "assistant"}}},
    {"type": "message.part.delta", "properties": {"messageID": "msg_x", "delta": "no part id"}},
    {"type": "message.removed", "properties": {"messageID": None}},
    {"type": "message.part.removed", "properties": {"messageID": "msg_x", "partID": {"id": 1}}},
    {"type": "session.status", "properties": {"status": "busy"}},
    {"type": "permission.asked", "properties": {"id": ["x"]}},
]


async def test_records_of_odd_shape_on_the_event_stream_are_passed_over(make_worker, redis, db, schema):
    """OpenCode's `/event` records are input like any other: one whose fields lack or twist what the mirror reads
    (another OpenCode version, a plugin, a broken proxy) changes nothing and never counts as a failure of the
    session, and the records around it are applied. Was: a KeyError in the tracker, counted against the session
    (SESSION_MAX_FAILURES of them end it in error), and the rest of its batch lost."""
    with serve_in_thread(create_simulator(1.0)) as url:
        async with OpenCodeClient(url) as oc:
            worker = await make_worker(opencode_url=url)
            state = await commands.enqueue(redis, db, oc, session_type="ask", prompt="SLOW answer please")
            sid = state["sessionId"]
            await wait_for(lambda: _connected(worker, 1), timeout=10, what="the event stream")

            async def streaming_part():
                for key, raw in (await redis.hgetall(keys.session_parts(sid))).items():
                    part = json.loads(raw)
                    if part["type"] == "text" and part["text"] and part.get("time", {}).keys() == {"start"}:
                        return key.decode().split("/")
                return None

            message_id, part_id = await wait_for(streaming_part, timeout=20, what="the answer streaming")
            twisted = [  # the session's own streaming part, twisted: a field that is no string, an id field
                {"messageID": message_id, "partID": part_id, "field": "time", "delta": "x"},
                {"messageID": message_id, "partID": part_id, "field": "id", "delta": "x"},
                {"messageID": message_id, "partID": part_id, "field": "text", "delta": 5},
            ]
            marker = {"messageID": message_id, "partID": part_id, "field": "text", "delta": " ⟨marker⟩"}
            records = [
                *ODD_EVENTS,
                *({"type": "message.part.delta", "properties": props} for props in twisted),
                {"type": "message.part.delta", "properties": marker},
            ]
            for record in records:
                record["properties"] = {**record["properties"], "sessionID": sid}
            await sim(url, "POST", "/__sim/events", records)

            async def marked():
                raw = await redis.hget(keys.session_parts(sid), f"{message_id}/{part_id}")
                return raw is not None and "⟨marker⟩" in json.loads(raw)["text"]

            await wait_for(marked, timeout=10, what="the record after the odd ones applied")
            part = json.loads(await redis.hget(keys.session_parts(sid), f"{message_id}/{part_id}"))
            assert (part["id"], part["messageID"], part["time"].keys()) == (part_id, message_id, {"start"})
            assert await redis.hget(keys.job(sid), "failures") in (None, b"0")

            async def archived():
                cur = await db.execute("SELECT status, messages FROM opencode_sessions WHERE id = %s", (sid,))
                row = await cur.fetchone()
                return row if row and row[0] not in ("pending", "running") else None

            status, messages = await wait_for(archived, timeout=40)
            assert status == "completed"
            assert messages == await oc.messages(sid)  # the stored whole text replaced the marked one
