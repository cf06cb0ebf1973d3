"""deploy/redis-acl.conf: the gateway's Redis user reads and subscribes to everything the gateway serves, and
writes nothing.

The users come from the file's own `user` lines (test passwords substituted) and are deleted afterwards.
"""

from __future__ import annotations

import time

import anyio
import pytest
import redis.exceptions
from redis.asyncio import Redis

from shared.models import dumps
from shared.sessions import read_live
from shared.store import keys
from tests.helpers import wait_for
from tests.roles import (
    GATEWAY,
    POLLER,
    SESSION,
    acl_denials,
    acl_users,
    close,
    run_command,
)


def test_acl_file_defines_both_users_with_placeholder_passwords() -> None:
    users = acl_users()
    assert set(users) == {GATEWAY, POLLER}
    for name, rules in users.items():
        assert rules[0] == "reset", f"{name}: re-applying must converge, so the rules start with reset"
        assert "on" in rules
        assert "nopass" not in rules
        passwords = [rule for rule in rules if rule.startswith((">", "#"))]
        assert passwords and all(rule.startswith(">CHANGE-ME-") for rule in passwords), passwords
        assert "+@all" not in rules and "allkeys" not in rules and "~*" not in rules and "&*" not in rules


@pytest.mark.anyio
async def test_gateway_reads_everything_it_serves(acl: Redis, gateway: Redis) -> None:
    await acl.hset(keys.session(SESSION), mapping={"sessionId": SESSION, "status": "running", "seq": "3"})
    await acl.hset(keys.session_messages(SESSION), "msg_1", dumps({"id": "msg_1", "role": "user"}))
    await acl.hset(keys.session_parts(SESSION), "msg_1/prt_1", dumps({"id": "prt_1", "messageID": "msg_1"}))
    await acl.zadd(keys.LIVE_INDEX, {SESSION: 1})
    await acl.rpush(keys.prompts(SESSION), "p1")

    assert await gateway.ping()
    seconds, _ = await gateway.time()  # the clock queue scores are compared with (`opencode-sessions status`)
    assert abs(seconds - time.time()) < 60
    assert await gateway.get("opencode:x") == b"original"
    assert (await gateway.hgetall(keys.session(SESSION)))[b"status"] == b"running"
    assert await gateway.hmget(keys.session(SESSION), ["seq"]) == [b"3"]
    assert await gateway.zrange(keys.LIVE_INDEX, 0, -1) == [SESSION.encode()]
    assert await gateway.lrange(keys.prompts(SESSION), 0, -1) == [b"p1"]
    assert await gateway.exists(keys.session(SESSION)) == 1
    async with gateway.pipeline(transaction=True) as pipe:  # MULTI … EXEC of reads
        pipe.hgetall(keys.session(SESSION))
        pipe.zscore(keys.LIVE_INDEX, SESSION)
        fields, score = await pipe.execute()
    assert fields[b"seq"] == b"3" and score == 1
    state = await read_live(gateway, SESSION)  # the gateway's own read path
    assert state is not None and state["status"] == "running" and len(state["messages"]) == 1
    # Nothing was refused along the way, not even what redis-py sends on connect and then ignores (CLIENT SETINFO).
    assert await acl_denials(acl) == []


@pytest.mark.anyio
async def test_gateway_subscribes_to_our_channels(acl: Redis, gateway: Redis) -> None:
    pubsub = gateway.pubsub()
    try:
        await pubsub.subscribe(keys.updates(SESSION), keys.LIVE_UPDATES)
        await pubsub.psubscribe("opencode:updates:*", "opencode:*")
        got: list[tuple[str, bytes]] = []

        async def collect(count: int) -> bool:
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                got.append((message["type"], message["channel"]))
            return len(got) >= count

        await wait_for(lambda: collect(4), timeout=10, what="the four subscriptions confirmed")
        assert sorted(kind for kind, _ in got) == ["psubscribe", "psubscribe", "subscribe", "subscribe"]
        got.clear()
        assert await acl.publish(keys.updates(SESSION), "one") == 3  # the channel and both patterns
        assert await acl.publish(keys.LIVE_UPDATES, "two") == 2  # the channel and `opencode:*`
        await wait_for(lambda: collect(5), timeout=10, what="both messages on every subscription")
        updates, live = keys.updates(SESSION).encode(), keys.LIVE_UPDATES.encode()
        expected = [("message", updates), ("pmessage", updates), ("pmessage", updates)]
        expected += [("message", live), ("pmessage", live)]
        assert sorted(got) == sorted(expected)
        assert await acl_denials(acl) == []
    finally:
        await close(pubsub)


GATEWAY_REFUSED: list[tuple[str, ...]] = [
    ("SET", "opencode:x", "1"),
    ("HSET", "opencode:session:ses_1a2b3c4d5e6fABCDEFGHIJklmn", "status", "error"),
    ("DEL", "opencode:x"),
    ("UNLINK", "opencode:x"),
    ("EXPIRE", "opencode:x", "1"),
    ("GETDEL", "opencode:x"),
    ("COPY", "opencode:x", "opencode:y"),
    ("RENAME", "opencode:x", "opencode:y"),
    ("ZADD", "opencode:queue", "0", "ses_1a2b3c4d5e6fABCDEFGHIJklmn"),
    ("RPUSH", "opencode:queue:prompts:x", "p"),
    ("PUBLISH", "opencode:sessions:updates", "forged"),
    ("EVAL", "return 1", "0"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "opencode:x"),
    ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("RANDOMKEY",),
    ("SORT_RO", "opencode:queue", "BY", "nosort", "GET", "other:*"),
    ("GET", "other:secret"),
    ("SWAPDB", "0", "1"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "999999"),
    ("FUNCTION", "FLUSH"),
    ("ACL", "LIST"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("command", GATEWAY_REFUSED, ids=lambda c: " ".join(c[:2]))
async def test_gateway_writes_nothing(acl: Redis, gateway: Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        await run_command(gateway, *command)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("opencode:y") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "channel"),
    [("subscribe", "other:channel"), ("psubscribe", "opencode:session:*"), ("psubscribe", "*")],
)
async def test_gateway_subscribes_to_nothing_else(gateway: Redis, kind: str, channel: str) -> None:
    """PSUBSCRIBE patterns must appear literally in the user's channel list, so only the listed ones work."""
    pubsub = gateway.pubsub()
    try:
        await getattr(pubsub, kind)(channel)
        with pytest.raises(redis.exceptions.NoPermissionError):
            with anyio.fail_after(10):
                while True:
                    await pubsub.get_message(timeout=0.1)
    finally:
        await close(pubsub)
