"""CommandBatch: many tasks' commands in one loop turn go out together, each caller gets its own reply or error."""

from __future__ import annotations

import dataclasses
import gc

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.errors import Unavailable
from shared.ids import SessionId
from shared.store import keys
from shared.store.batch import CommandBatch
from shared.store.connections import redis_client, store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState
from shared.store.lua import Scripts, StateChange
from tests.helpers import collector_garbage

pytestmark = pytest.mark.anyio


async def test_commands_of_one_loop_turn_go_out_together_and_each_caller_gets_its_own_reply(redis_url, redis):
    client = redis_client(redis_url)
    batch = CommandBatch(client)
    replies: dict[int, list[int]] = {}

    async def writer(n: int) -> None:  # each awaits its own commands in turn: its replies come back in its order
        replies[n] = [int(await batch.execute("INCR", f"counter:{n}")) for _ in range(5)]

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(writer, n)
    assert replies == {n: [1, 2, 3, 4, 5] for n in range(50)}
    assert batch.commands == 250
    assert batch.batches <= 10  # 50 writers' commands of one turn share one send (5 turns, and a spare few)
    await client.aclose()


async def test_an_error_reply_is_raised_to_its_caller_alone(redis_url, redis):
    client = redis_client(redis_url)
    batch = CommandBatch(client)
    await redis.set("text", "not a number")
    results = await _gather(
        batch.execute("INCR", "text"), batch.execute("SET", "plain", "v"), batch.execute("HSET", "h", "f", 1, "odd")
    )
    assert isinstance(results[0], ResponseError) and "not an integer" in str(results[0])
    assert results[1] == b"OK"
    assert isinstance(results[2], ResponseError)  # wrong number of arguments
    assert await redis.get("plain") == b"v"
    assert isinstance(await _gather(batch.execute("SET", "none", None)), list)  # not sendable: refused before sending
    assert await redis.exists("none") == 0
    await client.aclose()


async def test_a_failed_command_leaves_nothing_for_the_collector(redis_url, redis):
    """An error reply (NOSCRIPT after a Redis restart, a wrong type), an argument Redis cannot take and a connection
    that fails must all be freed by reference count: the poller's collector runs rarely, and each of them once left
    a traceback cycle through the batch's frames."""
    client = redis_client(redis_url)
    batch = CommandBatch(client)
    unreachable = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)  # nothing listens there
    await redis.set("text", "not a number")
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            with pytest.raises(ResponseError):
                await batch.execute("INCR", "text")
            with pytest.raises(TypeError):
                await batch.execute("SET", "none", None)
            with pytest.raises(RedisConnectionError):
                await CommandBatch(unreachable).execute("GET", "text")
        assert collector_garbage("shared") == []
    finally:
        gc.enable()
    await client.aclose()
    await unreachable.aclose()


async def test_a_cancelled_caller_leaves_the_rest_of_its_batch_be(redis_url, redis):
    client = redis_client(redis_url)
    batch = CommandBatch(client)
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(batch.execute, "SET", "kept-1", "a")
            scope.cancel()
            await batch.execute("SET", "cancelled", "b")
        tg.start_soon(batch.execute, "SET", "kept-2", "c")
    assert await batch.execute("GET", "kept-2") == b"c"
    await client.aclose()


async def test_fenced_writes_survive_a_server_that_lost_its_scripts(redis_url, redis):
    scripts = Scripts(redis_client(redis_url))
    sid = SessionId("ses_" + "b" * 26)
    state = LiveState(session_id=sid)
    await scripts.enqueue(sid, None, job={"epoch": "0"}, state=state.encode(), prompts=[], index_event="")
    lease = Lease.from_token(sid, "1:replica-1")
    await redis.set(keys.lease(sid), lease.token)
    change = StateChange(fields={"title": "one"}, messages={}, parts={}, removed_messages=[], removed_parts=[])
    first = await scripts.apply(lease, change)
    await redis.script_flush()  # as after a restart: the batch's EVALSHA meets NOSCRIPT, and the script is loaded again
    second = await scripts.apply(lease, dataclasses.replace(change, fields={"title": "two"}))
    assert second == first + 1
    assert await redis.hget(keys.session(sid), "title") == b"two"
    assert await scripts.apply(Lease.from_token(sid, "2:replica-2"), change) == -1  # still fenced


async def test_a_restart_and_an_outage_fail_no_more_than_the_batches_they_meet(redis_url, redis, embedded_redis):
    client = redis_client(redis_url)
    batch = CommandBatch(client)
    assert await batch.execute("SET", "k", "1") == b"OK"  # the pool now holds a connection
    embedded_redis.restart()  # that connection is dead: the next batch gets a live one
    assert await batch.execute("SET", "k", "2") == b"OK"
    embedded_redis.stop()
    with pytest.raises(Unavailable), store_errors("Redis"):
        await batch.execute("SET", "k", "3")
    embedded_redis.start()  # returns once Redis answers
    assert await batch.execute("GET", "k") is None  # no persistence: the restart emptied it; the batch goes on
    await client.aclose()


async def _gather(*calls):
    results: list = [None] * len(calls)

    async def one(index, call):
        try:
            results[index] = await call
        except Exception as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    return results
