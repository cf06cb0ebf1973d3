"""Redis lost a running session's live state: the backstop queues it again from its row, and a client that resumes
with the Last-Event-ID of the lost run ends with exactly the new run's state, never the old one's."""

from __future__ import annotations

import copy
import json

import anyio
import httpx
import psycopg_pool
import pytest

from poller import reconcile
from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import Scripts, StateChange

pytestmark = pytest.mark.anyio
DEADLINE_S = 30.0


@pytest.fixture
async def pool(schema):
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        yield pool


def said(message_id: str, text: str) -> StateChange:
    """One assistant message with one text part, as the owner writes it."""
    info = {"id": message_id, "sessionID": "x", "role": "assistant"}
    part = {"id": f"prt_{message_id[4:]}", "messageID": message_id, "type": "text", "text": text}
    return StateChange(
        fields={"status": "running"},
        messages={message_id: json.dumps(info)},
        parts={f"{message_id}/{part['id']}": json.dumps(part)},
        removed_messages=[],
        removed_parts=[],
        event_state='{"status":"running"}',
    )


async def live_seq(redis, sid: SessionId) -> int:
    record = await read_record(redis, sid)
    assert record is not None
    return record.state.seq


async def owner(scripts: Scripts) -> Lease:
    [lease] = await scripts.claim("replica-a", 60_000, 10)
    return lease


async def test_a_client_resuming_with_an_id_of_the_lost_run_gets_the_new_runs_state(
    make_gateway, redis, db, opencode, pool
):
    """Was: the requeued live state started at the row's seq + 1 (1 for a first run), and once the new run had
    written as often as the lost one, a client resuming with the lost run's last id found it equal to the new seq:
    no snapshot, and the new run's next update applied to the old run's messages."""
    gateway = await make_gateway()
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    scripts = Scripts(redis)
    lease = await owner(scripts)
    await scripts.apply(lease, said("msg_0000000000000000000000old1", "the lost run"))
    await scripts.apply(lease, said("msg_0000000000000000000000old2", "the lost run, on"))
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
        async with client.stream("GET", f"/sessions/{sid}/stream") as response:
            view.apply(await anext(aiter(aiter_events(response))))
        assert view.state is not None and view.last_id == str(await live_seq(redis, sid))

        await redis.flushall()  # Redis lost everything; the row still says pending
        assert await reconcile.reconcile_once(redis, pool) == 1
        lease = await owner(scripts)
        n = 0
        while await live_seq(redis, sid) < int(view.last_id):  # the new run writes as much as the lost one did
            n += 1
            await scripts.apply(lease, said(f"msg_000000000000000000000new{n:02d}", "the new run"))

        async with client.stream("GET", f"/sessions/{sid}/stream", headers={"Last-Event-ID": view.last_id}) as response:
            events = aiter(aiter_events(response))
            await scripts.apply(lease, said("msg_0000000000000000000000next", "and then"))
            with anyio.fail_after(DEADLINE_S):
                while view.state["seq"] != await live_seq(redis, sid):
                    view.apply(await anext(events))
        now = (await client.get(f"/sessions/{sid}")).json()
    assert view.state == now
    assert not any(m["info"]["id"].endswith("old1") for m in view.state["messages"])


async def test_every_seq_of_the_new_run_is_past_those_the_lost_run_published(redis, db, opencode, pool):
    """However far the lost run went past what its row records, the run queued again starts beyond it."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    scripts = Scripts(redis)
    lease = await owner(scripts)
    for n in range(40):
        await scripts.apply(lease, said(f"msg_00000000000000000000000{n:03d}", "the lost run"))
    lost = await live_seq(redis, sid)
    await redis.flushall()
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.updates(sid))
        assert await reconcile.reconcile_once(redis, pool) == 1
        with anyio.fail_after(DEADLINE_S):
            while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is None:
                pass
    reset = json.loads(message["data"])
    assert reset["type"] == "reset" and reset["seq"] > lost
    assert await live_seq(redis, sid) == reset["seq"]


async def test_through_a_flushall_mid_run_followers_and_resumers_end_with_the_archived_session(
    make_worker, make_gateway, redis, db
):
    """End to end: the poller runs the session, Redis loses everything (FLUSHALL: the gateway's pub/sub connection
    stays up, so only the backstop's `reset` tells a follower), the backstop queues it again, the poller claims it
    again and finishes it. One client follows throughout; another left before the loss and resumes after it."""
    with serve_in_thread(create_simulator(1.0)) as sim_url:
        async with OpenCodeClient(sim_url) as oc:
            await make_worker(opencode_url=sim_url)
            gateway = await make_gateway()
            sid = (await commands.enqueue(redis, db, oc, session_type="ask", prompt="TOOL SLOW survive"))["sessionId"]
            follower, resumer = SessionView(), SessionView()
            async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
                async with client.stream("GET", f"/sessions/{sid}/stream") as response:
                    with anyio.fail_after(DEADLINE_S):
                        async for event in aiter_events(response):
                            follower.apply(event)
                            if event.name == "update" and follower.state["status"] == "running":
                                break
                resumer.state, resumer.last_id = copy.deepcopy(follower.state), follower.last_id  # it leaves here
                lost = int(follower.state["seq"])
                path = f"/sessions/{sid}/stream"
                async with client.stream("GET", path, headers={"Last-Event-ID": str(lost)}) as response:
                    events = aiter_events(response)
                    await redis.flushall()
                    with anyio.fail_after(DEADLINE_S):
                        async for event in events:
                            follower.apply(event)
                            if event.name == "complete":
                                break
                headers = {"Last-Event-ID": str(resumer.last_id)}
                async with client.stream("GET", path, headers=headers) as response:
                    with anyio.fail_after(DEADLINE_S):
                        async for event in aiter_events(response):
                            resumer.apply(event)
                            if event.name == "complete":
                                break
                archived = (await client.get(f"/sessions/{sid}")).json()
    assert archived["status"] == "completed" and archived["seq"] > lost
    assert follower.completed and follower.state == archived
    assert resumer.completed and resumer.state == archived
