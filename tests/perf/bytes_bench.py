"""P4: bytes written to Redis (and published) per change, against the bytes that changed, as a session grows.

    python -m tests.perf.bytes_bench [--messages 200]

Drives the poller's own write path (diff → StateWriter → apply.lua) against a real Redis for a session that
grows one message at a time (each message: a user prompt, or an assistant step with a tool call and text) and
reads Redis's own byte counters: `total_net_input_bytes` (everything the poller sends, the published event
included) and the bytes a subscriber receives.
"""

from __future__ import annotations

import argparse

import anyio
from redis.asyncio import Redis

from poller.mirror import Mirror, diff
from poller.writer import StateWriter
from shared.dev.embedded.redis import start_redis
from shared.ids import SessionId
from shared.models import dumps
from shared.store.live import LiveState
from shared.store.lua import Scripts
from tests.perf.load_opencode import transcript

INFO_COMMAND_BYTES = len(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")  # the second INFO counts itself
SID = SessionId("ses_bytes000000000000000000000")


async def net_input(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_net_input_bytes"])


async def run(messages: int) -> None:
    with start_redis() as server:
        redis = Redis.from_url(server.url)
        scripts = Scripts(redis)
        state = LiveState(session_id=SID, session_type="chat", status="running", started_at=1)
        await scripts.enqueue(
            SID,
            None,
            job={"sessionId": SID, "epoch": "0"},
            state=state.encode(),
            prompts=[],
            index_event=state.index_event("appeared"),
        )
        [lease] = await scripts.claim("bench", 3_600_000, 1)
        writer = StateWriter(scripts, state)
        full = transcript(SID, messages)
        mirror = Mirror()
        pubsub = redis.pubsub()
        await pubsub.subscribe(f"opencode:updates:{SID}")
        await pubsub.get_message(timeout=1)
        report_at = {10, 50, 100, 200, messages}
        rows = []
        for count in range(1, messages + 1):
            current = full[:count]
            # the newest message arrives in two polls, as OpenCode builds it: first open, then complete
            for step in (_opening(current), current):
                delta = diff(mirror, step)
                changed = sum(len(dumps(i)) for i in delta.infos) + sum(len(dumps(p)) for p in delta.parts)
                before = await net_input(redis)
                await writer.apply(lease, delta)
                written = await net_input(redis) - before - INFO_COMMAND_BYTES
                published = 0
                while (message := await pubsub.get_message(timeout=0.01)) is not None:
                    if message["type"] in ("message", b"message"):
                        published += len(message["data"])
                mirror.update(step)
            if count in report_at:
                rows.append((count, changed, written, published))
        await pubsub.aclose()
        await redis.aclose()
    for count, changed, written, published in rows:
        print(
            f"P4 at {count} messages: a change of {changed} B wrote {written} B to Redis "
            f"({written / changed:.2f}x; Redis assembles the published event from these) and published {published} B "
            f"({published / changed:.2f}x)"
        )


def _opening(messages: list) -> list:
    """The newest message as first seen: its info without time.completed, and only its first part."""
    *older, newest = messages
    info = {**newest["info"], "time": {"created": newest["info"]["time"]["created"]}}
    return [*older, {"info": info, "parts": newest["parts"][:1]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    anyio.run(run, parser.parse_args().messages)


if __name__ == "__main__":
    main()
