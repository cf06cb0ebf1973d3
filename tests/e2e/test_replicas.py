"""Several `opencode-poller` processes over one Redis, PostgreSQL and OpenCode simulator: crashes and pauses."""

from __future__ import annotations

import collections
import json
import signal

import anyio
import httpx
import psycopg
import pytest
from redis.asyncio import Redis

from shared import commands
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import Child, wait_for

pytestmark = pytest.mark.anyio

# prompt keyword -> final status the archive must show
SCENARIOS = {
    "ECHO hello": "completed",
    "TOOL run it": "completed",
    "TOOLERR read a missing file": "completed",
    "THINK first": "completed",
    "SLOW answer": "completed",
    "REJECT me": "error",
    "FAIL me": "error",
}


async def archived_rows(database_url: str) -> dict[str, tuple]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT id, status, messages, error_message FROM opencode_sessions"
            " WHERE status NOT IN ('pending', 'running')"
        )
        return {row[0]: row for row in await cur.fetchall()}


async def owners(redis: Redis, session_ids) -> dict[str, list[str]]:
    """replica id -> the sessions whose lease it holds right now."""
    held: dict[str, list[str]] = collections.defaultdict(list)
    for sid in session_ids:
        token = await redis.get(keys.lease(sid))
        if token:
            held[token.decode().split(":", 1)[1]].append(sid)
    return held


def archive_log_counts(children: list[Child]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for child in children:
        for line in child.output().splitlines():
            if '"session_archived"' in line:
                counts[json.loads(line)["session_id"]] += 1
    return counts


async def replicas_up(redis: Redis, count: int) -> None:
    """Every replica started (its heartbeat is in Redis) before any session is queued: on a loaded machine one
    that starts a second late would otherwise find the queue already taken by the others."""

    async def up():
        return await redis.zcard(keys.POLLERS) >= count

    await wait_for(up, timeout=30, what=f"{count} replicas started")


async def enqueue_mix(redis, db, opencode, count: int, expected: dict[str, str] | None = None) -> dict[str, str]:
    """`count` sessions of the scenarios in turn, each added to `expected` (session id -> final status) as queued."""
    prompts = list(SCENARIOS)
    expected = {} if expected is None else expected
    for i in range(count):
        prompt = prompts[i % len(prompts)]
        state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id=f"T-{i}", prompt=prompt)
        expected[state["sessionId"]] = SCENARIOS[prompt]
    return expected


async def assert_all_archived_faithfully(schema, opencode, simulator, expected, children):
    rows = await wait_for(
        lambda: _when_all(archived_rows(schema), len(expected)), timeout=120, what=f"{len(expected)} archived"
    )
    assert set(rows) == set(expected)
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{simulator}/__sim/stats")).json()
    for sid, want in expected.items():
        _, status, messages, error = rows[sid]
        assert status == want, (sid, status, error)
        assert messages == await opencode.messages(sid), sid
        assert stats["prompt_async"]["by_session"].get(sid) == 1, sid  # delivered exactly once
        users = [m for m in messages if m["info"]["role"] == "user"]
        assert len(users) == 1 and len(users[0]["parts"]) == 1  # no duplicated prompt parts
    counts = archive_log_counts(children)
    # never twice (a replica killed right after archiving may not have logged it: at most once)
    assert all(counts[sid] <= 1 for sid in expected), {s: counts[s] for s in expected if counts[s] > 1}
    assert sum(counts[sid] for sid in expected) >= len(expected) - 1, "nearly every archive is logged once"


async def _when_all(rows_coro, n):
    rows = await rows_coro
    return rows if len(rows) >= n else None


async def test_three_replicas_fifty_sessions_with_a_kill_and_a_pause(redis, db, schema, make_poller, simulator_process):
    simulator = simulator_process(speed=3)
    children = [make_poller(simulator, name=f"replica{i}", MAX_SESSIONS_PER_POLLER="20") for i in range(3)]
    await replicas_up(redis, 3)
    async with OpenCodeClient(simulator) as opencode:
        expected: dict[str, str] = {}
        async with anyio.create_task_group() as tg:
            # watched while they are queued: on a loaded machine queueing 50 took longer than the first ones ran, and
            # a check after it could find no moment when all three replicas held one
            tg.start_soon(enqueue_mix, redis, db, opencode, 50, expected)
            held = await wait_for(
                lambda: _held_by_all(redis, list(expected), ["replica0-0", "replica1-1", "replica2-2"]),
                timeout=30,
                what="every replica holding sessions",
            )
            victims = held["replica0-0"]
            children[0].kill()  # kill -9 mid-run
            paused = held["replica1-1"]
            children[1].signal(signal.SIGSTOP)
            tokens = {sid: await redis.get(keys.lease(sid)) for sid in paused}

        async def taken_over():
            for sid in paused:
                token = await redis.get(keys.lease(sid))
                if token is not None and token == tokens[sid]:
                    return False
            return True

        await wait_for(taken_over, timeout=30, what="the paused replica's sessions taken over")
        children[1].signal(signal.SIGCONT)  # it wakes up past its lease: its writes must be refused
        await assert_all_archived_faithfully(schema, opencode, simulator, expected, children)
        assert victims, "the killed replica held sessions"
        assert paused, "the paused replica held sessions"
        assert "lease_lost" in children[1].output()


async def _held_by_all(redis, session_ids, replica_ids):
    held = await owners(redis, session_ids)
    return held if all(held.get(r) for r in replica_ids) else None


async def test_redis_flushall_mid_run_every_session_still_archives(redis, db, schema, make_poller, simulator_process):
    simulator = simulator_process(speed=1)
    children = [make_poller(simulator, name=f"flush{i}", MAX_SESSIONS_PER_POLLER="8") for i in range(2)]
    await replicas_up(redis, 2)
    async with OpenCodeClient(simulator) as opencode:
        expected = await enqueue_mix(redis, db, opencode, 12)
        await wait_for(lambda: _holding_n(redis, expected, "flush0-0", 4), timeout=30, what="sessions in flight")
        await redis.flushall()
        await assert_all_archived_faithfully(schema, opencode, simulator, expected, children)


async def test_sigterm_releases_leases_for_an_immediate_takeover(redis, db, schema, make_poller, simulator_process):
    simulator = simulator_process(speed=1)
    first = make_poller(simulator, name="term", LEASE_TTL_MS="30000")
    async with OpenCodeClient(simulator) as opencode:
        expected = await enqueue_mix(redis, db, opencode, 3)
        await wait_for(lambda: _holding_n(redis, expected, "term-0", 3), timeout=30)
        assert first.terminate(timeout=5) == 0  # exits by itself, within the drain
        for sid in expected:
            assert await redis.get(keys.lease(sid)) is None  # released, not left to expire
        second = make_poller(simulator, name="after", LEASE_TTL_MS="30000")

        async def claimed_by_second() -> bool:
            # claimed, not held: a session that ended on OpenCode meanwhile is archived within a tick of its claim
            claims = {
                json.loads(line)["session_id"] for line in second.output().splitlines() if "session_claimed" in line
            }
            return set(expected) <= claims

        await wait_for(claimed_by_second, timeout=10, what="takeover long before the 30 s TTL")
        await assert_all_archived_faithfully(schema, opencode, simulator, expected, [first, second])


async def _holding_n(redis, session_ids, replica_id, n):
    return len((await owners(redis, session_ids)).get(replica_id, [])) >= n


async def test_a_takeover_mid_answer_never_shows_text_opencode_did_not_write(
    redis, db, schema, make_poller, simulator_process
):
    """The new owner of a session whose answer is streaming has missed the deltas sent between the old owner's
    last write and its own start: the text it took over stops growing (as after a stream drop) until OpenCode
    stores the part whole. Every text the live state shows is a beginning of OpenCode's final text. Was: the deltas
    after the takeover were appended to the text the old owner left ("Slow ans" + "me: …"), shown until the end."""
    simulator = simulator_process(speed=1)  # SLOW: ten pieces of text, half a second apart
    first = make_poller(simulator, name="first", LEASE_TTL_MS="30000")
    async with OpenCodeClient(simulator) as opencode:
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer me please")
        sid = state["sessionId"]
        seen: list[str] = []  # every read of the answer's live text, in order

        async def answer_text() -> str | None:
            for raw in (await redis.hgetall(keys.session_parts(sid))).values():
                part = json.loads(raw)
                if part["type"] == "text" and "start" in part.get("time", {}):
                    seen.append(part["text"])
                    return str(part["text"])
            return None

        await wait_for(answer_text, timeout=30, what="the answer streaming")
        assert first.terminate(timeout=5) == 0  # releases the lease; the deltas from now on reach no one
        before_takeover = len(seen)
        second = make_poller(simulator, name="second", LEASE_TTL_MS="30000")

        async def archived() -> list | None:
            await answer_text()  # every text the live state shows on the way
            return (await archived_rows(schema)).get(sid)

        _, status, messages, _ = await wait_for(archived, timeout=60, interval=0.02, what="the session archived")
        assert status == "completed" and messages == await opencode.messages(sid)
        [final] = [p["text"] for m in messages for p in m["parts"] if p["type"] == "text" and "time" in p]
        assert len(seen) - before_takeover > 20, "the answer's live text was read all through the takeover"
        assert all(final.startswith(text) for text in seen), (final, sorted(set(seen)))
        assert "session_claimed" in second.output()
