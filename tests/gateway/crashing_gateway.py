"""`python -m tests.gateway.crashing_gateway`: the real gateway, whose fan-out task dies once told to.

The test sets the Redis key CRASH_KEY; the fan-out task then raises, as a bug that escaped it would.
"""

from __future__ import annotations

import os

import anyio
from redis.asyncio import Redis

from gateway import main
from gateway.fanout import Fanout

CRASH_KEY = "test:crash-the-fanout"


async def _run_until_told(self: Fanout) -> None:
    async with Redis.from_url(os.environ["REDIS_URL"]) as client:
        while not await client.exists(CRASH_KEY):  # noqa: ASYNC110 - the signal is a Redis key
            await anyio.sleep(0.05)
    raise RuntimeError("the fan-out task died (test hook)")


if __name__ == "__main__":
    Fanout.run = _run_until_told  # type: ignore[method-assign]
    main.main()
