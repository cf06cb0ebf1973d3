"""Many servers and directories: one replica drives sessions on two simulated servers (and two directories on
one of them), each with its own client, status board and `/event` stream, opened at the first session there
and closed after the last one ends; a server that goes down affects only its own sessions."""

from __future__ import annotations

import pytest

from shared import commands, sessions
from shared.config import ServerConfig
from shared.opencode.servers import OpenCodeServers
from shared.store import archive
from tests.helpers import sim, wait_for

pytestmark = pytest.mark.anyio

DIRECTORY = "/srv/second-repo"


async def final_row(db, sid):
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


async def test_sessions_on_two_servers_and_two_directories_each_use_their_own_place(
    make_worker, simulator_process, redis, db
):
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)  # a TOOL SLOW run: ~5 s
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    worker = await make_worker(opencode_url=first, opencode_servers=servers, poll_interval_s=0.1)
    placed = OpenCodeServers(servers)
    try:
        places = [("a", None), ("b", None), ("b", DIRECTORY)]
        ids = []
        for server, directory in places:
            state = await commands.enqueue(
                redis, db, placed, session_type="ask", prompt="TOOL SLOW run it", server=server, directory=directory
            )
            assert (state["server"], state["directory"]) == (server, directory)
            ids.append(state["sessionId"])

        async def both_b_places_streaming() -> bool:
            routers = worker.places.routers()
            held = worker.places.held()
            b_sessions = worker.metrics.registry.get_sample_value("poller_server_sessions", {"server": "b"})
            connected = all(r.connections == 1 for r in routers.values())
            return held == {("b", None): 1, ("b", DIRECTORY): 1} and connected and b_sessions == 2

        await wait_for(both_b_places_streaming, timeout=30, what="one /event stream per place of server b")
        rows = [await wait_for(lambda s=sid: final_row(db, s), timeout=60, what="archived") for sid in ids]
        for row, (server, directory) in zip(rows, places, strict=True):
            assert row.status == "completed"
            assert (row.server, row.directory) == (server, directory)
            assert row.messages == await placed.client(server, directory).messages(row.id)
        assert rows[2].messages[-1]["info"]["path"]["cwd"] == DIRECTORY  # OpenCode ran it in that directory

        async def places_closed() -> bool:
            return worker.places.held() == {} and worker.places.routers() == {}

        await wait_for(places_closed, timeout=10, what="every place closed after its last session")
    finally:
        await placed.aclose()


async def test_a_server_going_down_affects_only_its_own_sessions(make_worker, simulator_process, redis, db):
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    await make_worker(opencode_url=first, opencode_servers=servers, poll_interval_s=0.1, opencode_retry_deadline_s=3.0)
    placed = OpenCodeServers(servers, timeout_s=1.0)
    try:
        healthy = await commands.enqueue(redis, db, placed, session_type="ask", prompt="TOOL SLOW a", server="a")
        doomed = await commands.enqueue(redis, db, placed, session_type="ask", prompt="TOOL SLOW b", server="b")
    finally:
        await placed.aclose()
    # server b stops answering (every connection reset): its session retries until its deadline and ends in
    # error; a's completes
    await sim(second, "POST", "/__sim/faults", {"kind": "reset", "path": "*"})
    row = await wait_for(lambda: final_row(db, doomed["sessionId"]), timeout=30, what="b's session ended")
    assert row.status == "error" and row.server == "b"
    row = await wait_for(lambda: final_row(db, healthy["sessionId"]), timeout=30, what="a's session ended")
    assert row.status == "completed"


async def test_a_board_whose_place_closes_mid_refresh_is_skipped(simulator_url):
    """The replica takes the list of boards, then a place's last session ends and its client is closed while its
    request board is between its two GETs: the refresh ends quietly instead of crashing the replica loop."""
    from poller.places import refresh_board
    from poller.request_board import RequestBoard
    from shared.opencode.client import OpenCodeClient

    client = OpenCodeClient(simulator_url)
    board = RequestBoard(client)
    permissions = client.permissions

    async def then_closed() -> list:
        listed = await permissions()
        await client.aclose()  # Places.release, between GET /permission and GET /question
        return listed

    client.permissions = then_closed  # type: ignore[method-assign]
    await refresh_board(board)  # no RuntimeError
    assert board.closed
    open_client = OpenCodeClient(simulator_url)
    open_board = RequestBoard(open_client)
    await open_client.aclose()
    await refresh_board(open_board)  # closed before the refresh began: skipped as well


async def test_a_hung_server_holds_up_neither_claims_nor_the_other_servers_sessions(
    make_worker, simulator_process, redis, db
):
    """b's `GET /session/status` hangs (for longer than the test waits, within the client's timeout): a session
    on a enqueued meanwhile is claimed, run and archived. While the replica loop waited for every board, the hung
    request stopped every claim (and every job revision read) of the replica until the client's timeout."""
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    worker = await make_worker(
        opencode_url=first, opencode_servers=servers, poll_interval_s=0.1, opencode_timeout_s=300
    )
    placed = OpenCodeServers(servers)
    try:
        await commands.enqueue(redis, db, placed, session_type="ask", prompt="TOOL SLOW b", server="b")
        await sim(second, "POST", "/__sim/faults", {"kind": "slow", "ms": 300_000, "path": "/session/status"})

        async def b_held() -> bool:
            return worker.places.held() == {("b", None): 1}

        await wait_for(b_held, timeout=30, what="b's session tracked: its board is refreshed")

        async def b_status_hanging() -> bool:
            stats = await sim(second, "GET", "/__sim/stats")
            return stats["requests"].get("GET /session/status", 0) >= 1

        await wait_for(b_status_hanging, timeout=30, what="a refresh of b's board hanging")
        healthy = await commands.enqueue(redis, db, placed, session_type="chat", prompt="ECHO first", server="a")
        row = await wait_for(lambda: final_row(db, healthy["sessionId"]), timeout=30, what="a's session archived")
        assert row.status == "completed"
    finally:
        await placed.aclose()


async def test_a_hung_server_holds_no_start_up_slot(make_worker, simulator_process, redis, db, monkeypatch):
    """Start-ups take one of STARTUP_CONCURRENCY slots from their claim until their claim is recorded, not until
    their first fetch: b's session list hangs, and b's sessions claimed first must not keep a's from starting."""
    from poller import worker as worker_module

    monkeypatch.setattr(worker_module, "STARTUP_CONCURRENCY", 1)
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    placed = OpenCodeServers(servers)
    try:
        hang = {"kind": "slow", "ms": 300_000, "path": "/session/*/message", "method": "GET"}
        await sim(second, "POST", "/__sim/faults", hang)
        for i in range(3):
            await commands.enqueue(redis, db, placed, session_type="ask", prompt=f"ECHO b{i}", server="b")
        worker = await make_worker(
            opencode_url=first, opencode_servers=servers, poll_interval_s=0.1, opencode_timeout_s=300
        )

        async def b_hanging() -> bool:
            fetched = (await sim(second, "GET", "/__sim/stats"))["requests"].items()
            return sum(n for k, n in fetched if k.startswith("GET /session/") and k.endswith("/message")) >= 3

        await wait_for(b_hanging, timeout=30, what="every one of b's sessions past its start-up, fetching")
        assert worker.metrics.registry.get_sample_value("poller_sessions_starting") == 0
        healthy = await commands.enqueue(redis, db, placed, session_type="chat", prompt="ECHO first", server="a")
        row = await wait_for(lambda: final_row(db, healthy["sessionId"]), timeout=30, what="a's session archived")
        assert row.status == "completed"
    finally:
        await placed.aclose()


async def test_a_session_naming_no_server_is_recorded_on_the_first_server_it_runs_on(
    make_worker, simulator_process, redis, db
):
    """A session queued without a server (another backend's job, or one queued before OPENCODE_SERVERS was set)
    runs on the first server. Was: it stayed unnamed, and every reader called it `default`, a server this
    deployment does not have: `status`, `--server a` and the live list's server filter missed it."""
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    placed = OpenCodeServers(servers)
    try:
        unnamed = await commands.enqueue(redis, db, placed.client("a", None), session_type="ask", prompt="TOOL SLOW x")
        assert unnamed["server"] == "default"  # as readers call a session that names no server
        await make_worker(opencode_url=first, opencode_servers=servers, poll_interval_s=0.1)

        async def named() -> dict | None:
            live = await sessions.read_live(redis, unnamed["sessionId"])
            return live if live is not None and live["server"] == "a" and live["status"] == "running" else None

        live = await wait_for(named, timeout=30, what="the running session named after server a")
        assert await sessions.live_server_counts(redis) == {"a": 1}
        listed = await sessions.live_sessions(redis, server="a")
        assert [s["sessionId"] for s in listed] == [unnamed["sessionId"]]
        assert live["seq"] > unnamed["seq"]
        row = await wait_for(lambda: final_row(db, unnamed["sessionId"]), timeout=60, what="archived")
        assert (row.status, row.server) == ("completed", "a")
        assert row.messages == await placed.client("a", None).messages(row.id)
    finally:
        await placed.aclose()
