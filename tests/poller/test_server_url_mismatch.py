"""Replicas given different URLs under one server name (OPENCODE_SERVERS), as an operator lives it: said loudly,
once, and no session ended as gone because one misconfigured replica asked the wrong OpenCode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from poller.server_urls import find_disputes, own_urls
from shared import commands
from shared.config import ServerConfig
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.servers import OpenCodeServers
from shared.sessions import parse_server_urls
from shared.store import archive, keys
from tests.fixtures import SIM_SPEED
from tests.helpers import wait_for
from tests.shared.test_cli_status import cli

pytestmark = pytest.mark.anyio

RIGHT, WRONG = "replica-right", "replica-wrong"


@pytest.fixture
def second_simulator() -> Iterator[str]:
    """Another OpenCode server: the one the misconfigured replica is given for `repo2`."""
    with serve_in_thread(create_simulator(SIM_SPEED, retry_delays=(0.2, 0.2))) as url:
        yield url


def configs(default: str, repo2: str) -> tuple[ServerConfig, ...]:
    return ServerConfig("default", default), ServerConfig("repo2", repo2)


async def final_row(db: Any, sid: str) -> Any:
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


async def beats(redis: Any, replica: str, seen: set[bytes], count: int) -> bool:
    """True once `count` heartbeats of `replica` have been seen (each is followed by its URL check)."""
    at = await redis.hget(keys.poller(replica), "heartbeatAt")
    if at is not None:
        seen.add(at)
    return len(seen) >= count


async def test_a_replica_with_another_url_for_a_server_hands_the_session_back(
    make_worker, redis, db, simulator_url, second_simulator
):
    """The review's repro: a session created on sim1 as `repo2`; a replica given `repo2=<sim2>` claims it and gets
    404. Was: the session ended at once in `error` ("OpenCode no longer has this session"), and nothing said why.
    Now the replica logs `server_url_mismatch` once per (server, URL) and hands the session back uncounted while a
    live replica disagrees on the URL; the replica with the right URL runs it to the end."""
    right = await make_worker(
        opencode_url=simulator_url, opencode_servers=configs(simulator_url, simulator_url), replica_id=RIGHT
    )
    right.claiming = False  # the misconfigured replica claims the session first, as in the review
    await wait_for(lambda: redis.exists(keys.poller(RIGHT)), timeout=20, what="the right replica's heartbeat")
    placed = OpenCodeServers(configs(simulator_url, simulator_url))
    try:
        state = await commands.enqueue(redis, db, placed, session_type="ask", prompt="ECHO hello", server="repo2")
    finally:
        await placed.aclose()
    sid = state["sessionId"]
    with structlog.testing.capture_logs() as logs:
        await make_worker(
            opencode_url=simulator_url,
            opencode_servers=configs(simulator_url, second_simulator),
            replica_id=WRONG,
            session_max_failures=1,
        )

        async def handed_back_thrice() -> bool:
            row = await final_row(db, sid)
            assert row is None, f"the session was ended: {row.status} {row.error_message}"
            epoch = await redis.hget(keys.job(sid), "epoch")
            return epoch is not None and int(epoch) >= 3

        await wait_for(handed_back_thrice, timeout=30, what="the session claimed and handed back, three times")
        seen: set[bytes] = set()
        await wait_for(lambda: beats(redis, WRONG, seen, 3), timeout=20, what="three heartbeats of the wrong replica")
        assert await redis.hget(keys.job(sid), "failures") in (None, b"0")
        right.claiming = True
        row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session archived")
    assert (row.status, row.server) == ("completed", "repo2"), row.error_message
    said = [e for e in logs if e["event"] == "server_url_mismatch"]
    mine = [(e["replica"], e["server"], e["url"], e["other_url"]) for e in said]
    assert sorted(mine) == [
        (RIGHT, "repo2", simulator_url, second_simulator),
        (WRONG, "repo2", second_simulator, simulator_url),
    ], said
    assert all(e["log_level"] == "error" and e["other_replicas"] for e in said)


async def test_status_shows_each_replicas_server_urls_and_the_mismatch(
    make_worker, redis, redis_url, simulator_url, second_simulator
):
    """`opencode-sessions status`: every replica's servers with their URLs (--json), and a line naming the server
    whose URL the live replicas disagree on, with each URL and its replicas."""
    await make_worker(
        opencode_url=simulator_url, opencode_servers=configs(simulator_url, simulator_url), replica_id=RIGHT
    )
    await make_worker(
        opencode_url=simulator_url, opencode_servers=configs(simulator_url, second_simulator), replica_id=WRONG
    )

    async def both_said() -> bool:
        urls = [await redis.hget(keys.poller(r), "serverUrls") for r in (RIGHT, WRONG)]
        return all(urls)

    await wait_for(both_said, timeout=20, what="both heartbeats with their server URLs")
    code, out, err = await cli("status", "--json", REDIS_URL=redis_url)
    assert code == 0, err
    report = json.loads(out)
    urls = {p["replicaId"]: p["serverUrls"] for p in report["pollers"]}
    assert urls == {
        RIGHT: {"default": simulator_url, "repo2": simulator_url},
        WRONG: {"default": simulator_url, "repo2": second_simulator},
    }
    assert report["serverUrlMismatches"] == [
        {"server": "repo2", "urls": {simulator_url: [RIGHT], second_simulator: [WRONG]}}
    ]
    code, out, err = await cli("status", REDIS_URL=redis_url)
    assert code == 0, err
    shown = ", ".join(
        f"{url} ({replica})" for url, replica in sorted([(simulator_url, RIGHT), (second_simulator, WRONG)])
    )
    lines = [line for line in out.splitlines() if "MISMATCH" in line]
    assert lines == [f"  MISMATCH server repo2 has different URLs on live replicas: {shown}"], out


def test_only_another_url_for_a_server_both_have_is_a_dispute() -> None:
    """A server another replica lacks (a rolling deploy adding one) or a replica that writes no `serverUrls` (one
    from before them) is no dispute; a heartbeat never shows a password."""
    mine = own_urls([ServerConfig("default", "http://a:4096"), ServerConfig("repo2", "http://opencode:pw@b:4096")])
    assert mine == {"default": "http://a:4096", "repo2": "http://b:4096"}
    others = {
        "older": {},
        "adding": {"default": "http://a:4096", "repo3": "http://c:4096"},
        "wrong": {"default": "http://a:4096", "repo2": "http://c:4096"},
        "wrong-too": {"repo2": "http://c:4096"},
    }
    assert find_disputes(mine, others) == {"repo2": {"http://c:4096": ["wrong", "wrong-too"]}}
    assert parse_server_urls(b"not json") == parse_server_urls(None) == {}
    assert parse_server_urls(b'{"a": "http://x", "b": 1}') == {"a": "http://x"}
