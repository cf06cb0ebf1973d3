"""Two real `opencode serve` processes, and two directories on one of them: sessions enqueued to each complete
and archive equal to their own server's list, with one `/event` connection per server+directory in use and none
after; one server killed mid-run ends its own sessions by their deadline while the other's complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import commands
from shared.config import ServerConfig
from shared.opencode.servers import OpenCodeServers
from shared.store import archive
from tests.helpers import wait_for
from tests.realopencode.harness import (
    OpenCodeServer,
    make_workdir,
    opencode_version,
    run_opencode,
    stop_process_group,
)
from tests.realopencode.scripted_model import ScriptedModel, serve_scripted_model

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]

RUN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def two_servers(
    opencode_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ScriptedModel, OpenCodeServer, OpenCodeServer, Path]]:
    """Two servers on one scripted model, and a second project directory that the second one serves too."""
    root = tmp_path_factory.mktemp("opencode-two")
    with (
        serve_scripted_model() as model,
        run_opencode(opencode_binary, root / "a", model.url, version=opencode_version()) as first,
        run_opencode(opencode_binary, root / "b", model.url, version=opencode_version()) as second,
    ):
        other = make_workdir(root / "b-second-project", model.url, {**os.environ, **second.env})
        yield model, first, second, other


async def ended(db: Any, sid: str) -> archive.ArchiveRow | None:
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


async def test_sessions_on_two_servers_and_two_directories_archive_their_own_lists(
    two_servers: Any, make_worker: Any, redis: Any, db: Any
) -> None:
    _, first, second, other = two_servers
    servers = (ServerConfig("a", first.url), ServerConfig("b", second.url))
    worker = await make_worker(opencode_url=first.url, opencode_servers=servers, poll_interval_s=0.2)
    placed = OpenCodeServers(servers)
    try:
        places = [("a", None), ("b", None), ("b", str(other))]
        ids = []
        for server, directory in places:
            state = await commands.enqueue(
                redis, db, placed, session_type="ask", prompt="TOOL SLOW run it", server=server, directory=directory
            )
            ids.append(state["sessionId"])

        async def one_stream_per_place() -> bool:
            routers = worker.places.routers()
            held = worker.places.held()
            return held == {("b", None): 1, ("b", str(other)): 1} and all(r.connections == 1 for r in routers.values())

        await wait_for(one_stream_per_place, timeout=RUN_TIMEOUT_S, what="one /event stream per place of b")
        assert worker.router is not None and worker.router.connections == 1  # the default place's (server a)
        for sid, (server, directory) in zip(ids, places, strict=True):
            row = await wait_for(lambda s=sid: ended(db, s), timeout=RUN_TIMEOUT_S, what=f"{sid} archived")
            assert (row.status, row.server, row.directory) == ("completed", server, directory)
            assert row.messages == await placed.client(server, directory).messages(sid)
        last = await placed.client("b", str(other)).messages(ids[2])
        assert last[-1]["info"]["path"]["cwd"] == str(other)  # OpenCode ran it in the second directory

        async def no_place_left() -> bool:
            return worker.places.held() == {} and worker.places.routers() == {}

        await wait_for(no_place_left, timeout=10, what="every place of b closed after its last session")
        sample = worker.metrics.registry.get_sample_value
        assert sample("poller_sessions_archived_total", {"server": "b", "status": "completed"}) == 2
        assert sample("poller_sessions_archived_total", {"server": "a", "status": "completed"}) == 1
    finally:
        await placed.aclose()


async def test_one_server_killed_mid_run_ends_only_its_own_sessions(
    two_servers: Any, make_worker: Any, redis: Any, db: Any
) -> None:
    _, first, second, _ = two_servers
    servers = (ServerConfig("a", first.url), ServerConfig("b", second.url))
    await make_worker(
        opencode_url=first.url, opencode_servers=servers, poll_interval_s=0.2, opencode_retry_deadline_s=5.0
    )
    placed = OpenCodeServers(servers)
    try:
        healthy = await commands.enqueue(redis, db, placed, session_type="ask", prompt="TOOL SLOW a", server="a")
        doomed = await commands.enqueue(redis, db, placed, session_type="ask", prompt="TOOL SLOW b", server="b")
    finally:
        await placed.aclose()

    async def running() -> bool:
        row = await archive.fetch(db, doomed["sessionId"])
        return row is not None and row.status == "running"

    await wait_for(running, timeout=RUN_TIMEOUT_S, what="b's session claimed")
    stop_process_group(second.process)  # server b is gone for good (this module's last test)
    row = await wait_for(lambda: ended(db, doomed["sessionId"]), timeout=30, what="b's session ended by its deadline")
    assert row.status == "error" and row.server == "b"
    row = await wait_for(lambda: ended(db, healthy["sessionId"]), timeout=RUN_TIMEOUT_S, what="a's session ended")
    assert row.status == "completed"
