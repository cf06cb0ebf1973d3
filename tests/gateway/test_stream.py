"""The session SSE stream against a running poller: mid-session joins, resumes, archived sessions, fan-out."""

from __future__ import annotations

import copy

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import SessionView, aiter_events, apply_update
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def follow(client: httpx.AsyncClient, url: str, view: SessionView, *, stop_after: int | None = None, **kw):
    """Read events into `view` until `complete` (or `stop_after` updates); returns the updates applied."""
    built = copy.deepcopy(view.state)  # a resume at the current seq gets no snapshot: go on from what we hold
    updates = 0
    async with client.stream("GET", url, **kw) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in aiter_events(response):
            if event.name == "snapshot":
                built = copy.deepcopy(event.data)
            elif event.name == "update":
                apply_update(built, event.data)
                updates += 1
            view.apply(event)
            if event.name == "complete":
                assert built is not None
                assert built["messages"] == event.data["messages"], "updates rebuilt exactly the archived messages"
                break
            if stop_after is not None and updates >= stop_after:
                break
    return updates


@pytest.fixture
async def slow_sim():
    with serve_in_thread(create_simulator(2.0)) as url:
        async with OpenCodeClient(url) as oc:
            yield url, oc


async def test_a_client_joining_mid_session_ends_equal_to_the_archive(make_worker, make_gateway, redis, db, slow_sim):
    sim_url, oc = slow_sim
    await make_worker(opencode_url=sim_url)
    gateway = await make_gateway()
    state = await commands.enqueue(redis, db, oc, session_type="ask", ticket_id="T-1", prompt="TOOL SLOW please")
    sid = state["sessionId"]
    await wait_for(lambda: _has_messages(redis, sid), timeout=20, what="the session under way")
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        updates = await follow(client, f"/sessions/{sid}/stream", view)
        assert updates > 0
        assert view.completed and view.state["live"] is False
        archived = (await client.get(f"/sessions/{sid}")).json()
    assert archived["live"] is False and archived["status"] == "completed"
    assert view.state == archived
    assert archived["messages"] == await oc.messages(sid)


async def _has_messages(redis, sid):
    from shared.store import keys

    return await redis.hlen(keys.session_parts(sid)) > 0


async def test_a_client_that_reconnects_with_last_event_id_loses_nothing(
    make_worker, make_gateway, redis, db, slow_sim
):
    sim_url, oc = slow_sim
    await make_worker(opencode_url=sim_url)
    gateway = await make_gateway()
    state = await commands.enqueue(redis, db, oc, session_type="chat", prompt="TOOL SLOW again")
    sid = state["sessionId"]
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        await follow(client, f"/sessions/{sid}/stream", view, stop_after=2)  # then the connection drops
        first_id = view.last_id
        await anyio.sleep(0.3)  # changes happen while the client is away
        await follow(client, f"/sessions/{sid}/stream", view, headers={"Last-Event-ID": first_id})
        assert view.completed
        archived = (await client.get(f"/sessions/{sid}")).json()
    assert view.state == archived
    assert archived["messages"] == await oc.messages(sid)


async def test_resume_at_the_current_seq_sends_nothing_old(make_worker, make_gateway, redis, db, slow_sim):
    _, oc = slow_sim
    gateway = await make_gateway(ping_interval_s=0.2)
    state = await commands.enqueue(redis, db, oc, session_type="chat", prompt="ECHO waiting")  # no poller yet
    sid = state["sessionId"]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        url = f"/sessions/{sid}/stream?lastEventId=1"
        async with client.stream("GET", url) as response:
            async for event in aiter_events(response):
                assert event.name == "ping", event  # not a snapshot: the client already holds seq 1
                break


async def test_an_archived_session_streams_snapshot_complete_and_closes(make_worker, make_gateway, redis, db, opencode):
    await make_worker()
    gateway = await make_gateway()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO done")
    sid = state["sessionId"]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        await wait_for(lambda: _archived(client, sid), timeout=30)
        async with client.stream("GET", f"/sessions/{sid}/stream") as response:
            received = [event async for event in aiter_events(response)]  # ends: the server closed the stream
    assert [e.name for e in received] == ["snapshot", "complete"]
    assert received[0].data["live"] is False and received[1].data == received[0].data


async def _archived(client, sid):
    response = await client.get(f"/sessions/{sid}")
    return response.status_code == 200 and response.json()["live"] is False


async def test_unknown_and_invalid_ids(make_gateway, redis, db):
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for path in ("/sessions/{}", "/sessions/{}/stream"):
            missing = await client.get(path.format("ses_" + "z" * 26))
            assert missing.status_code == 404 and "not found" in missing.json()["error"]
            invalid = await client.get(path.format("not-a-session"))
            assert invalid.status_code == 400 and "invalid session id" in invalid.json()["error"]


async def test_500_clients_on_50_sessions_share_one_pubsub_connection(make_worker, make_gateway, redis, db, slow_sim):
    sim_url, oc = slow_sim
    gateway = await make_gateway()
    sessions = [
        (await commands.enqueue(redis, db, oc, session_type="ask", prompt="TOOL fan out"))["sessionId"]
        for _ in range(50)
    ]
    views = {(sid, i): SessionView() for sid in sessions for i in range(10)}
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway, timeout=120, limits=limits) as client:
        async with anyio.create_task_group() as tg:
            for (sid, _), view in views.items():
                tg.start_soon(follow, client, f"/sessions/{sid}/stream", view)
            subscribers = await wait_for(lambda: _subscribed(redis, 50), timeout=60, what="50 channels subscribed")
            assert subscribers == 1  # one pub/sub connection serves all 500 clients
            await make_worker(opencode_url=sim_url, max_sessions_per_poller=50)
        for (sid, _), view in views.items():
            assert view.completed and view.state["status"] == "completed", sid


async def _subscribed(redis, channels):
    """How many connections hold subscriptions, once `channels` channels are subscribed."""
    active = await redis.pubsub_channels("opencode:updates:*")
    if len(active) < channels:
        return None
    clients = await redis.client_list()
    return sum(1 for c in clients if int(c.get("sub", 0)) > 0)
