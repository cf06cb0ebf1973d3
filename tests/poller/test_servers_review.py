"""Many servers, as an operator and an attacker use them: a server one replica lacks in a rolling deploy, and one
directory spelled several ways."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest

from poller.deps import TrackerDeps
from poller.places import Places
from shared import commands
from shared.clock import now_ms
from shared.config import ServerConfig
from shared.errors import InvalidInput
from shared.models import dumps
from shared.opencode.servers import OpenCodeServers, parse_directory
from shared.store import archive, keys
from tests.helpers import enqueue_on_retired_server, wait_for

pytestmark = pytest.mark.anyio

OTHER_REPLICA = "replica-with-retired"


async def final_row(db: Any, sid: str) -> Any:
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


async def beat(redis: Any, servers: list[str]) -> None:
    """One heartbeat of another replica, as Worker._heartbeat_loop writes it."""
    now = now_ms()
    await redis.hset(keys.poller(OTHER_REPLICA), mapping={"heartbeatAt": now, "servers": dumps(servers)})
    await redis.zadd(keys.POLLERS, {OTHER_REPLICA: now})


async def test_a_server_another_live_replica_has_is_handed_back_not_counted(make_worker, redis, db, simulator_url):
    """A rolling deploy that adds (or renames) a server: a replica still without it claims a session there. Was: a
    failure of the session's own, counted at each claim, so it ended in error (`unknown server`) within a few ticks
    although the replicas that have the server would have run it. Now it is handed back uncounted while such a
    replica lives, and counted once none does."""
    sid = await enqueue_on_retired_server(redis, db, simulator_url, simulator_url)
    alive = True

    async def other_replica() -> None:
        while alive:
            await beat(redis, ["default", "retired"])
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_replica)
        await make_worker(session_max_failures=1)  # it knows only the default server

        async def claimed_thrice() -> bool:
            epoch = await redis.hget(keys.job(sid), "epoch")
            return epoch is not None and int(epoch) >= 3

        await wait_for(claimed_thrice, timeout=30, what="the session claimed and handed back, three times")
        assert await final_row(db, sid) is None
        assert await redis.hget(keys.job(sid), "failures") in (None, b"0")
        alive = False
    await redis.zrem(keys.POLLERS, OTHER_REPLICA)  # the last replica with the server is gone: now it is counted
    row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session ended")
    assert row.status == "error" and "'retired'" in row.error_message


async def test_an_older_replicas_heartbeat_without_servers_counts_as_not_having_it(
    make_worker, redis, db, simulator_url
):
    """A replica that does not say which servers it has (one from before this, or an unreadable field) is not
    waited for: the session is still bounded, never handed back for ever."""
    sid = await enqueue_on_retired_server(redis, db, simulator_url, simulator_url)
    await redis.hset(keys.poller(OTHER_REPLICA), mapping={"heartbeatAt": now_ms(), "servers": "not json"})
    await redis.zadd(keys.POLLERS, {OTHER_REPLICA: now_ms() + 60_000})
    try:
        await make_worker(session_max_failures=1)
        row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session ended")
        assert row.status == "error"
    finally:
        await redis.zrem(keys.POLLERS, OTHER_REPLICA)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("/srv/repo/", "/srv/repo"),
        ("/srv//repo", "/srv/repo"),
        ("//srv/repo", "/srv/repo"),
        ("/srv/./repo/.", "/srv/repo"),
        ("/srv/other/../repo", "/srv/repo"),
        ("/../srv/repo", "/srv/repo"),
        ("/", "/"),
        ("///", "/"),
        ("/srv/my repo/ünï ✓", "/srv/my repo/ünï ✓"),
        ("/srv/50%/a%zz", "/srv/50%/a%zz"),  # no %XX: OpenCode's second decoding fails and keeps it as it is
    ],
)
def test_a_directory_is_taken_in_its_one_spelling(given: str, canonical: str) -> None:
    """Was: each spelling was its own place (a client and an `/event` stream more, to the one OpenCode instance
    that `path.resolve` makes of them all) and a `directory=` filter missed the sessions spelled otherwise."""
    assert parse_directory(given) == canonical


@pytest.mark.parametrize("given", ["/srv/a%20b", "/srv/%2e%2e/etc", "/srv/x%2Fy", "/srv/%41"])
def test_a_directory_opencode_would_decode_into_another_is_refused(given: str) -> None:
    """OpenCode percent-decodes `?directory=` again after its router has. Was: `/srv/a%20b` was recorded, and the
    session ran in `/srv/a b` (or `/srv/%2e%2e/etc` in `/etc`)."""
    with pytest.raises(InvalidInput, match="%XX"):
        parse_directory(given)


async def test_a_jobs_directory_spelled_otherwise_is_the_same_place(simulator_url: str) -> None:
    """Another backend's job (or OPENCODE_DIRECTORY) may spell a directory with a trailing or doubled `/`. Was: a
    place apart from the one of the same directory spelled plainly, the default one too."""
    servers = OpenCodeServers((ServerConfig("a", simulator_url), ServerConfig("b", simulator_url)))
    try:
        places = Places(servers, cast(TrackerDeps, None), "/srv/home/")
        home = places.key(None, None)
        assert home == ("a", "/srv/home")
        assert places.key("a", "/srv//home/") == home
        assert places.key("b", "/srv/x/./") == places.key("b", "/srv/x") == ("b", "/srv/x")
        assert servers.client("b", "/srv/x/") is servers.client("b", "/srv/x")
    finally:
        await servers.aclose()


async def test_two_spellings_of_one_directory_share_one_place(make_worker, simulator_process, redis, db):
    """Sessions enqueued in `/srv/repo` and `/srv/repo/` on one server: one place, one `/event` stream."""
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    worker = await make_worker(opencode_url=first, opencode_servers=servers, poll_interval_s=0.1)
    placed = OpenCodeServers(servers)
    try:
        ids = []
        for directory in ("/srv/repo", "/srv/repo/", "/srv//repo"):
            state = await commands.enqueue(
                redis, db, placed, session_type="ask", prompt="TOOL SLOW x", server="b", directory=directory
            )
            assert state["directory"] == "/srv/repo"
            ids.append(state["sessionId"])

        async def one_place() -> bool:
            return worker.places.held() == {("b", "/srv/repo"): 3} and len(worker.places.routers()) == 1

        await wait_for(one_place, timeout=30, what="the three sessions in one place")
        for sid in ids:
            row = await wait_for(lambda s=sid: final_row(db, s), timeout=60, what="archived")
            assert (row.status, row.directory) == ("completed", "/srv/repo")
    finally:
        await placed.aclose()


@pytest.mark.parametrize(
    "directory",
    ["/srv/my repo/ünï ✓ & ?#=+;", "/" + "/".join(["ü" * 127] * 16)],  # the longest: 4,080 bytes, 12 KB encoded
)
async def test_a_directory_with_odd_characters_runs_there(make_worker, simulator_process, redis, db, directory):
    """Spaces, unicode, URL delimiters, a path near PATH_MAX: sent as `?directory=` on every call and the stream."""
    first, second = simulator_process(speed=2.0), simulator_process(speed=2.0)
    servers = (ServerConfig("a", first), ServerConfig("b", second))
    worker = await make_worker(opencode_url=first, opencode_servers=servers, poll_interval_s=0.1)
    placed = OpenCodeServers(servers)
    try:
        state = await commands.enqueue(
            redis, db, placed, session_type="ask", prompt="TOOL SLOW x", server="b", directory=directory
        )

        async def streaming() -> bool:
            routers = worker.places.routers()
            return list(routers) == [("b", directory)] and routers["b", directory].connections == 1

        await wait_for(streaming, timeout=30, what="the place's /event stream connected")
        row = await wait_for(lambda: final_row(db, state["sessionId"]), timeout=60, what="archived")
        assert (row.status, row.directory) == ("completed", directory)
        assert row.messages[-1]["info"]["path"]["cwd"] == directory
    finally:
        await placed.aclose()
