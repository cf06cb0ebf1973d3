"""The poller's fenced writes, one redis-py call each against CommandBatch: the CPU each write costs this process.

    python -m tests.perf.batch_bench [--writers 1000,50] [--writes 20]

`--writers` tasks each write a text part to its own session `--writes` times through Scripts.apply (apply.lua,
with the arguments a poll or an event gives it), all at once, as a replica's trackers do. Run once with every
write as its own redis-py call (what Scripts did before) and once batched per loop turn (what it does now); prints
the process's CPU per write and the writes per second, against a real Redis.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import anyio
import uvloop
from redis.asyncio import Redis

from shared.dev.embedded.redis import start_redis
from shared.ids import SessionId
from shared.models import dumps
from shared.store import keys
from shared.store.connections import redis_client
from shared.store.lease import Lease
from shared.store.live import LiveState
from shared.store.lua import Scripts, StateChange
from tests.perf.procstat import usage

TEXT = "the build fails because `pytest` imports the module twice; set PYTHONPATH once — ✓ done. " * 3


class OneCallEach:
    """Each command as its own redis-py call: a pool checkout, a Python encode of every argument, a read."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def execute(self, *command: Any) -> Any:
        return await self._redis.execute_command(*command)


async def measure(redis_url: str, mode: str, writers: int, writes: int) -> None:
    redis = redis_client(redis_url)
    scripts = Scripts(redis)
    if mode == "one call each":
        scripts._batch = OneCallEach(redis)  # type: ignore[assignment]  # what Scripts sent before batching
    leases = []
    for i in range(writers):
        sid = SessionId(f"ses_batch{i:021d}")
        state = LiveState(session_id=sid, status="running")
        await scripts.enqueue(sid, None, job={"epoch": "1"}, state=state.encode(), prompts=[], index_event="")
        lease = Lease.from_token(sid, "1:poller-7f9c5d-12345-a1b2c3d4")
        await redis.set(keys.lease(sid), lease.token)
        leases.append(lease)

    async def writer(lease: Lease) -> None:
        for n in range(writes):
            part = {"id": f"prt_{n:026d}", "messageID": "msg_0190a1b2c3d4AbCdEfGhIjKlMn", "type": "text", "text": TEXT}
            change = StateChange(
                fields={"updatedAt": str(time.time_ns() // 1_000_000)},
                messages={},
                parts={f"{part['messageID']}/{part['id']}": dumps(part)},
                removed_messages=[],
                removed_parts=[],
                event_state='{"status":"running"}',
            )
            if await scripts.apply(lease, change) < 0:
                raise RuntimeError("lease refused")

    started_cpu, started = usage(os.getpid()).cpu_s, time.perf_counter()
    async with anyio.create_task_group() as tg:
        for lease in leases:
            tg.start_soon(writer, lease)
    elapsed, cpu = time.perf_counter() - started, usage(os.getpid()).cpu_s - started_cpu
    total = writers * writes
    print(
        f"fenced writes, {mode}: {writers} writers x {writes} = {total} writes: {cpu / total * 1e6:.1f} us CPU per "
        f"write, {total / elapsed:,.0f} writes/s"
    )
    await redis.flushall()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1000,50")
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    with start_redis() as server:
        for writers in (int(w) for w in args.writers.split(",")):
            for mode in ("one call each", "batched"):
                uvloop.run(measure(server.url, mode, writers, args.writes))


if __name__ == "__main__":
    main()
