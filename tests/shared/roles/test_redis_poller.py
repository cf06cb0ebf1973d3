"""deploy/redis-acl.conf: the poller's Redis user runs the real Lua scripts but cannot reach the rest of the server.

The users come from the file's own `user` lines (test passwords substituted) and are deleted afterwards.
"""

from __future__ import annotations

import pytest
import redis.exceptions
from redis.asyncio import Redis

from shared.ids import TicketId
from shared.models import as_text, dumps
from shared.sessions import read_live
from shared.store import keys
from shared.store.lua import Scripts, StateChange
from tests.helpers import wait_for
from tests.roles import (
    SESSION,
    acl_denials,
    close,
    run_command,
)


@pytest.mark.anyio
async def test_poller_runs_the_real_scripts(acl: Redis, poller: Redis, gateway: Redis) -> None:
    """Every command the Lua scripts call (TIME, HSET, ZADD, PUBLISH, PEXPIRE…) is within the poller's rules."""
    await acl.script_flush()  # redis-py must go through NOSCRIPT -> SCRIPT LOAD -> EVALSHA, as after a restart
    scripts = Scripts(poller)
    pubsub = gateway.pubsub()
    try:
        await pubsub.subscribe(keys.updates(SESSION))
        await wait_for(lambda: acl.pubsub_numsub(keys.updates(SESSION)), timeout=10)
        state = {"sessionId": SESSION, "status": "pending", "sessionType": "ask", "ticketId": "T-1", "startedAt": "1"}
        created = await scripts.enqueue(
            SESSION,
            TicketId("T-1"),
            job={"sessionType": "ask", "epoch": "0"},
            state=state,
            prompts=[dumps({"messageID": "msg_1", "text": "hi"})],
            index_event=dumps({"type": "appeared", "sessionId": SESSION}),
        )
        assert created == 1
        claimed = await scripts.claim("replica-1", 5000, 10)
        assert [c.session_id for c in claimed] == [SESSION]
        assert [r is not None for r in await scripts.renew(5000, claimed)] == [True]
        change = StateChange(
            fields={"status": "running"},
            messages={"msg_1": dumps({"id": "msg_1", "role": "user"})},
            parts={},
            removed_messages=[],
            removed_parts=[],
            event_state=dumps({"status": "running"}),
            index_event=dumps({"type": "status", "sessionId": SESSION, "status": "running"}),
        )
        assert await scripts.apply(claimed[0], change) == 2
        live = await read_live(gateway, SESSION)
        assert live is not None and live["status"] == "running"
        assert await scripts.pop_prompt(claimed[0], dumps({"messageID": "msg_1", "text": "hi"})) == 1
        rev = as_text((await poller.hget(keys.job(SESSION), "promptsRev")) or b"0")
        final = await scripts.finish(
            claimed[0],
            TicketId("T-1"),
            prompts_rev=rev,
            event=dumps({"type": "complete", "status": "completed"}),
            index_event=dumps({"type": "ended", "sessionId": SESSION}),
        )
        assert final == 3
        assert await read_live(gateway, SESSION) is None
        assert await scripts.release(claimed) == 0

        seqs: list[bytes] = []

        async def all_events() -> bool:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                seqs.append(message["data"])
            return len(seqs) >= 3

        await wait_for(all_events, timeout=10, what="the scripts' events, as the gateway sees them")
        assert [s.split(b",", 1)[0] for s in seqs] == [b'{"seq":1', b'{"seq":2', b'{"seq":3']
        assert await acl_denials(acl) == []
    finally:
        await close(pubsub)


@pytest.mark.anyio
async def test_poller_eval_writes_our_keys(acl: Redis, poller: Redis) -> None:
    assert await poller.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "opencode:x", "new") == b"OK"
    sha = await poller.script_load("return redis.call('HSET', KEYS[1], 'f', ARGV[1])")
    assert await poller.evalsha(sha, 1, "opencode:h", "v") == 1
    assert await poller.eval_ro("return redis.call('GET', KEYS[1])", 1, "opencode:x") == b"new"
    assert await poller.publish(keys.LIVE_UPDATES, "{}") == 0
    async with poller.pipeline(transaction=True) as pipe:
        pipe.set("opencode:y", "1")
        pipe.delete("opencode:y")
        assert await pipe.execute() == [True, 1]
    assert await acl.get("opencode:x") == b"new"
    assert await acl_denials(acl) == []


POLLER_REFUSED: list[tuple[str, ...]] = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("KEYS", "*"),
    ("SORT", "opencode:queue", "BY", "nosort", "GET", "other:*"),
    ("SWAPDB", "0", "1"),
    ("SET", "other:x", "1"),
    ("GET", "other:secret"),
    ("DEL", "other:secret"),
    ("PUBLISH", "other:channel", "x"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "other:x"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "DELETE", "anything"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "999999"),
    ("ACL", "SETUSER", "opencode-poller", "+@all"),
    ("MIGRATE", "127.0.0.1", "1", "opencode:x", "0", "10"),
    ("RESTORE", "opencode:z", "0", "x"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("command", POLLER_REFUSED, ids=lambda c: " ".join(c[:2]))
async def test_poller_cannot_touch_the_rest(acl: Redis, poller: Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        await run_command(poller, *command)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("other:x") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "script",
    [
        "return redis.call('SET', 'other:x', '1')",
        "return redis.call('FLUSHALL')",
        "return redis.call('DEL', 'other:secret')",
        "return redis.call('PUBLISH', 'other:channel', 'x')",
    ],
)
async def test_poller_scripts_are_held_to_the_same_rules(acl: Redis, poller: Redis, script: str) -> None:
    """A script runs with its caller's rights: EVAL is no way around the ACL."""
    with pytest.raises(redis.exceptions.ResponseError, match="ACL failure in script"):
        await poller.eval(script, 0)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("other:x") == 0
