"""One in-process replica against real Redis, PostgreSQL and the OpenCode simulator."""

from __future__ import annotations

import gc
import json

import anyio
import pytest

from shared import answers, commands
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.errors import Conflict
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import collector_garbage, sim, wait_for, waiting_entry

pytestmark = pytest.mark.anyio


async def archived(db, sid):
    cur = await db.execute(
        "SELECT status, messages, error_message, completed_at FROM opencode_sessions WHERE id = %s", (sid,)
    )
    row = await cur.fetchone()
    return row if row and row[0] not in ("pending", "running") else None


async def test_tool_session_is_mirrored_then_archived_byte_for_byte(make_worker, redis, db, opencode):
    worker = await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-7", prompt="TOOL run echo")
    sid = state["sessionId"]
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(sid))
    row = await wait_for(lambda: archived(db, sid), timeout=30, what="the archive")
    status, messages, error, completed_at = row
    assert status == "completed" and error is None and completed_at is not None
    assert messages == await opencode.messages(sid)
    roles = [m["info"]["role"] for m in messages]
    assert roles[0] == "user" and roles.count("assistant") == 2  # a tool step, then the answer
    assert not await redis.exists(keys.session(sid), keys.job(sid), keys.ticket_active("T-7"))
    seqs, kinds = [], []
    while (msg := await pubsub.get_message(timeout=0.5)) is not None:
        if msg["type"] in ("message", b"message"):
            event = json.loads(msg["data"])
            seqs.append(event["seq"])
            kinds.append(event["type"])
    await pubsub.aclose()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert kinds[-1] == "complete"
    sample = worker.metrics.registry.get_sample_value
    assert sample("poller_sessions_archived_total", {"server": "default", "status": "completed"}) == 1
    assert sample("poller_polls_total", {"server": "default"}) >= 1  # the per-session counters name the server


@pytest.mark.parametrize("events", [True, False], ids=["events", "polling-alone"])
async def test_ended_sessions_leave_nothing_for_the_collector(make_worker, redis, db, opencode, events):
    """Everything a session used is freed by reference count when it ends, whichever way it ends: the poller's
    collector thresholds make full collections rare, so a cycle through a tracker (its mirror, its requests, a
    failed call's traceback) would stay in memory until shutdown."""
    gc.collect()
    gc.disable()  # what is left below is what only a collection would free
    try:
        worker = await make_worker(opencode_events=events)
        prompts = ("TOOL run echo", "REJECT this", "FAIL this", "THINK then ECHO", "SLOW answer", "SLOW cancelled")
        sids = [
            (await commands.enqueue(redis, db, opencode, session_type="chat", prompt=prompt))["sessionId"]
            for prompt in prompts
        ]
        ask = {"session_type": "ask", "prompt": "TOOL run", "permission": ["bash=ask"]}
        asked = await commands.enqueue(redis, db, opencode, **ask)
        question = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="QUESTION pick")
        await commands.cancel(redis, db, sids[-1])
        entry = await waiting_entry(redis, asked["sessionId"])
        await answers.reply(redis, db, asked["sessionId"], entry["id"], reply="once")
        entry = await waiting_entry(redis, question["sessionId"])
        await answers.answer(redis, db, question["sessionId"], entry["id"], reject=True)
        sids += [asked["sessionId"], question["sessionId"]]
        for sid in sids:
            await wait_for(lambda sid=sid: archived(db, sid), timeout=60, what="the archive")
        await commands.send(redis, db, sids[3], "ECHO a follow-up")  # revived, then archived again
        await wait_for(lambda: _reopened_and_archived(db, sids[3]), timeout=60, what="the follow-up archived")
        await wait_for(lambda: _async(not worker.held), what="every tracker ended")
        assert collector_garbage("poller", "shared") == []
    finally:
        gc.enable()


async def _reopened_and_archived(db, sid):
    row = await archived(db, sid)
    return row if row is not None and len(row[1]) == 4 else None


async def test_failed_and_rejected_runs_end_in_error_with_opencodes_message(make_worker, redis, db, opencode):
    await make_worker()
    rejected = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="REJECT this")
    failed = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="FAIL this")
    for state in (rejected, failed):
        status, messages, error, _ = await wait_for(lambda s=state: archived(db, s["sessionId"]), timeout=30)
        assert status == "error"
        final_error = messages[-1]["info"]["error"]
        assert error == final_error["data"]["message"]


async def test_prompt_is_delivered_exactly_once_when_the_answer_is_lost(
    make_worker, redis, db, opencode, simulator_url
):
    # OpenCode takes the prompt, but the connection drops before the 204: the poller must look, not re-send.
    await sim(
        simulator_url, "POST", "/__sim/faults", {"kind": "reset_after", "path": "/session/*/prompt_async", "count": 1}
    )
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO once")
    sid = state["sessionId"]
    _, messages, _, _ = await wait_for(lambda: archived(db, sid), timeout=30)
    stats = await sim(simulator_url, "GET", "/__sim/stats")
    assert stats["prompt_async"]["by_session"][sid] == 1
    user_parts = [p for m in messages if m["info"]["role"] == "user" for p in m["parts"]]
    assert [p["text"] for p in user_parts] == ["ECHO once"]


async def test_a_prompt_opencode_carries_out_after_its_send_timed_out_is_delivered_once(
    make_worker, redis, db, opencode, simulator_url
):
    """OpenCode takes the prompt and carries it out 4.5 s later, long after the poller's send timed out (2 s). Was:
    sent again 2 s after the timeout; OpenCode carried out both (the prompt twice in one message, two runs)."""
    fault = {"kind": "late", "path": "/session/*/prompt_async", "count": 1, "ms": 4500}
    await sim(simulator_url, "POST", "/__sim/faults", fault)
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO once")
    sid = state["sessionId"]
    _, messages, _, _ = await wait_for(lambda: archived(db, sid), timeout=30)

    async def every_send_carried_out() -> dict | None:
        stats = await sim(simulator_url, "GET", "/__sim/stats")
        sent = stats["requests"].get(f"POST /session/{sid}/prompt_async", 0)
        return stats if stats["prompt_async"]["by_session"].get(sid, 0) == sent else None

    stats = await wait_for(every_send_carried_out, timeout=10)
    assert stats["prompt_async"]["by_session"][sid] == 1
    user_parts = [p for m in messages if m["info"]["role"] == "user" for p in m["parts"]]
    assert [p["text"] for p in user_parts] == ["ECHO once"]


async def test_follow_up_revives_an_archived_chat(make_worker, redis, db, opencode):
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-9", prompt="ECHO first")
    sid = state["sessionId"]
    await wait_for(lambda: archived(db, sid), timeout=30)
    message_id = await commands.send(redis, db, sid, "ECHO second")
    assert await redis.get(keys.ticket_active("T-9")) == sid.encode()  # live again at once

    async def archived_with_both():
        row = await archived(db, sid)
        return row if row and len(row[1]) == 4 else None

    status, messages, _, _ = await wait_for(archived_with_both, timeout=30)
    assert status == "completed"
    assert messages == await opencode.messages(sid)
    assert messages[2]["info"]["id"] == message_id
    assert messages[3]["parts"][-2]["text"] == "ECHO: ECHO second"


async def test_cancel_aborts_a_running_session(make_worker, redis, db, opencode):
    await make_worker(poll_interval_s=0.05)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer please")
    sid = state["sessionId"]

    async def running():
        return await redis.hget(keys.session(sid), "status") == b"running" and await redis.hlen(keys.session_parts(sid))

    await wait_for(running, timeout=30)
    assert await commands.cancel(redis, db, sid) == "requested"
    status, messages, error, _ = await wait_for(lambda: archived(db, sid), timeout=30)
    assert status == "cancelled" and error is None
    assert messages[-1]["info"]["error"]["name"] == "MessageAbortedError"
    with pytest.raises(Conflict):
        await commands.cancel(redis, db, sid)


async def test_cancel_before_any_poller_runs_it_never_prompts(make_worker, redis, db, opencode, simulator_url):
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO never")
    sid = state["sessionId"]
    await commands.cancel(redis, db, sid)
    await make_worker()
    status, messages, _, _ = await wait_for(lambda: archived(db, sid), timeout=30)
    assert (status, messages) == ("cancelled", [])
    stats = await sim(simulator_url, "GET", "/__sim/stats")
    assert stats["prompt_async"]["by_session"].get(sid, 0) == 0


async def test_an_unchanged_poll_writes_nothing(make_worker, redis, db):
    # While OpenCode streams a text part its stored text stays "", so the message list does not change:
    # every poll in that window must cost zero Redis writes and publish nothing.
    with serve_in_thread(create_simulator(1.0)) as url:
        async with OpenCodeClient(url) as slow_opencode:
            # polling alone: with the event stream on, the streamed deltas are (wanted) changes
            worker = await make_worker(poll_interval_s=0.02, opencode_url=url, opencode_events=False)
            state = await commands.enqueue(redis, db, slow_opencode, session_type="ask", prompt="SLOW answer")
            sid = state["sessionId"]

            async def streaming():
                messages = await slow_opencode.messages(sid)
                parts = [p for m in messages for p in m["parts"]]
                return any(p["type"] == "text" and p["text"] == "" and "end" not in p.get("time", {}) for p in parts)

            await wait_for(streaming, timeout=20)
            await wait_for(lambda: _async(sid in worker.held and worker.held[sid].tracker is not None), timeout=10)
            tracker = worker.held[sid].tracker
            pubsub = redis.pubsub()
            await pubsub.subscribe(keys.updates(sid))
            await pubsub.get_message(timeout=1)
            await anyio.sleep(0.1)  # let the poll that saw the text part start land
            while await pubsub.get_message(timeout=0.05) is not None:
                pass  # changes from before the window
            messages_before = await slow_opencode.messages(sid)
            writes_before, seq_before = tracker.writes, await redis.hget(keys.session(sid), "seq")
            polls_before = (await sim(url, "GET", "/__sim/stats"))["requests"].get(f"GET /session/{sid}/message", 0)
            await wait_for(lambda: _polled_more(url, sid, polls_before + 20), timeout=10, what="20 more polls")
            assert await slow_opencode.messages(sid) == messages_before, "the window must really be unchanged"
            assert tracker.writes == writes_before
            assert await redis.hget(keys.session(sid), "seq") == seq_before
            assert await pubsub.get_message(timeout=0.05) is None
            await pubsub.aclose()


async def _async(value):
    return value


async def _polled_more(simulator_url, sid, target):
    stats = await sim(simulator_url, "GET", "/__sim/stats")
    return stats["requests"].get(f"GET /session/{sid}/message", 0) >= target


@pytest.mark.parametrize(
    ("grace_s", "expected"),
    [(0.0, [6]), (60.0, [2, 2, 2])],
    ids=["fair-share", "start-up-grace"],
)
async def test_a_dead_replicas_sessions_are_taken_over_in_one_claim_once_the_replica_has_seen_its_peers(
    make_worker, redis, db, opencode, monkeypatch, grace_s, expected
):
    """Beyond the fixed batch, up to the replica's fair share: one survivor takes them all at one tick. In its first
    START_GRACE_S it has not yet seen the heartbeats of replicas started with it: the fixed batch alone."""
    from poller import worker as worker_module
    from shared.store.lua import Scripts

    ids = await enqueue_echoes(redis, db, opencode, 6)
    assert len(await Scripts(redis).claim("dead-replica", 60_000, 10)) == 6
    await redis.zadd(keys.POLLERS, {"dead-replica": 0})
    await redis.delete(*(keys.lease(sid) for sid in ids))  # as if its leases ran out
    await redis.zadd(keys.QUEUE, {sid: 0 for sid in ids})
    claims: list[int] = []
    claim = Scripts.claim

    async def counted(self, *args, **kwargs):
        leases = await claim(self, *args, **kwargs)
        if leases:
            claims.append(len(leases))
        return leases

    monkeypatch.setattr(Scripts, "claim", counted)
    monkeypatch.setattr(worker_module, "CLAIM_BATCH", 2)
    monkeypatch.setattr(worker_module, "START_GRACE_S", grace_s)
    await make_worker()
    await wait_for(lambda: all_archived(db, ids), timeout=30, what="every session archived")
    assert claims == expected
    tokens = await redis.mget([keys.lease(sid) for sid in ids])
    assert all(t is None or t.startswith(b"2:") for t in tokens)  # taken over: the next epoch


async def enqueue_echoes(redis, db, opencode, count: int) -> list[str]:
    ids = []
    for i in range(count):
        state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id=f"T-{i}", prompt="ECHO hi")
        ids.append(state["sessionId"])
    return ids


async def all_archived(db, ids) -> bool:
    return all([await archived(db, sid) for sid in ids])


async def test_trackers_claimed_together_load_a_bounded_number_at_a_time(make_worker, redis, db, opencode, monkeypatch):
    """A takeover's thousands of start-ups (a whole record read, a claim recorded) must not overrun the pools and
    the loop; `poller_sessions_starting` counts those waiting and those loading (what the benchmarks wait on)."""
    from poller import worker as worker_module
    from poller.session_mirror import SessionMirror

    ids = await enqueue_echoes(redis, db, opencode, 6)
    load = SessionMirror.load
    loading, most = 0, 0
    starting: list[float | None] = []  # the replica's gauge, as each start-up loads its record
    workers = []

    async def slow_load(*args, **kwargs):
        nonlocal loading, most
        loading += 1
        most = max(most, loading)
        starting.append(workers[0].metrics.registry.get_sample_value("poller_sessions_starting"))
        try:
            await anyio.sleep(0.2)  # long enough for every start-up let through to overlap
            return await load(*args, **kwargs)
        finally:
            loading -= 1

    monkeypatch.setattr(SessionMirror, "load", staticmethod(slow_load))
    monkeypatch.setattr(worker_module, "STARTUP_CONCURRENCY", 2)
    workers.append(await make_worker())
    await wait_for(lambda: all_archived(db, ids), timeout=30, what="every session archived")
    assert most == 2
    assert starting[0] == 6 and starting[-1] <= 2  # claimed together: all six counted, waiting or loading
    assert workers[0].metrics.registry.get_sample_value("poller_sessions_starting") == 0
