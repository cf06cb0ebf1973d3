"""Bytes on the event path: a session streaming a long answer in small deltas, as Redis and a subscriber see it.

    python -m tests.perf.stream_bytes_bench [--deltas 640] [--interval-ms 100,20,5,1]

Drives the poller's own event path (apply_events → with_appends → StateWriter → append.lua / apply.lua)
against a real Redis, with OpenCode's event sequence for one text part: the part stored as "", its
`message.part.delta`s, the part stored whole at its end. Deltas are batched the way the tracker coalesces them
(the first of a quiet spell written at once, then at most one write per EVENT_COALESCE_MS), computed from the
stated arrival interval rather than timed, so every figure is deterministic. Reads Redis's own byte counter
(`total_net_input_bytes`: everything the poller sends) and the bytes one subscriber receives, and prints them per
streamed byte (the deltas' UTF-8 bytes) over the whole answer and over its first and last tenth.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.asyncio import Redis

from poller.event_apply import apply_events
from poller.mirror import Mirror, with_appends
from poller.writer import StateWriter
from shared.dev.embedded.redis import start_redis
from shared.ids import SessionId
from shared.store import keys
from shared.store.live import LiveState, read_record
from shared.store.lua import Scripts
from tests.perf.bytes_bench import INFO_COMMAND_BYTES, net_input

SID = SessionId("ses_stream00000000000000000000")
MID, PID = "msg_0190a1b2c3d4AbCdEfGhIjKlMn", "prt_0190a1b2c3d5AbCdEfGhIjKlMn"
REPLICA = "poller-7f9c5d-12345-a1b2c3d4"  # the shape of a real replica id, so the lease token weighs what it does
TEXT = (
    "the build fails because `pytest` imports the module twice; a fix is to set PYTHONPATH once, then run"
    ' "make test" again. Résumé: caching helps — ✓ done 🚀 and here is code:\n```python\nprint("hi")\n```\n'
)
WORDS = TEXT.split()


def answer_deltas(count: int, seed: int = 15) -> list[str]:
    """`count` deltas of one to eight words, like a model's token chunks (quotes, newlines, non-ASCII included)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) + " " for _ in range(count)]


def batches(count: int, interval_ms: float, window_ms: float) -> list[list[int]]:
    """Delta indexes per write, as the tracker coalesces deltas arriving every `interval_ms`."""
    out: list[list[int]] = []
    last_write = -float("inf")
    due = None  # when the pending batch is written
    for i in range(count):
        at = i * interval_ms
        if due is not None and at > due:
            last_write, due = due, None
        if due is not None:
            out[-1].append(i)
        elif at >= last_write + window_ms:
            out.append([i])
            last_write = at
        else:
            due = last_write + window_ms
            out.append([i])
    return out


@dataclass
class Tally:
    streamed: int = 0
    written: int = 0
    published: int = 0
    writes: int = 0
    rows: list[tuple[int, int, int]] = field(default_factory=list)  # per write: streamed, written, published

    def ratio(self, rows: list[tuple[int, int, int]]) -> float:
        streamed = sum(r[0] for r in rows)
        return sum(r[1] + r[2] for r in rows) / streamed


def part(text: str, end: bool = False) -> dict[str, Any]:
    time = {"start": 1_764_800_000_000, **({"end": 1_764_800_009_000} if end else {})}
    return {"id": PID, "sessionID": SID, "messageID": MID, "type": "text", "text": text, "time": time}


def delta_event(text: str) -> dict[str, Any]:
    props = {"sessionID": SID, "messageID": MID, "partID": PID, "field": "text", "delta": text}
    return {"type": "message.part.delta", "properties": props}


def stored_event(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message.part.updated", "properties": {"sessionID": SID, "part": value}}


async def stream(redis: Redis, deltas: list[str], groups: list[list[int]]) -> Tally:
    scripts = Scripts(redis)
    await redis.flushall()
    state = LiveState(session_id=SID, session_type="chat", status="running", started_at=1)
    job = {"sessionId": SID, "epoch": "0"}
    await scripts.enqueue(SID, None, job=job, state=state.encode(), prompts=[], index_event=state.index_event("a"))
    [lease] = await scripts.claim(REPLICA, 3_600_000, 1)
    writer = StateWriter(scripts, state)
    info = {"id": MID, "sessionID": SID, "role": "assistant", "time": {"created": 1_764_800_000_000}}
    mirror = Mirror.of([{"info": info, "parts": []}])
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(SID))
    await pubsub.get_message(timeout=1)
    tally = Tally()
    writes: list[tuple[list[dict[str, Any]], int]] = [([stored_event(part(""))], 0)]
    for group in groups:
        writes.append(([delta_event(deltas[i]) for i in group], sum(len(deltas[i].encode()) for i in group)))
    writes.append(([stored_event(part("".join(deltas), end=True))], 0))
    for events, streamed in writes:
        change = with_appends(mirror, apply_events(mirror, events))
        before = await net_input(redis)
        await writer.apply(lease, change)
        written = await net_input(redis) - before - INFO_COMMAND_BYTES
        published = 0
        while (message := await pubsub.get_message(timeout=0.01)) is not None:
            if message["type"] in ("message", b"message"):
                published += len(message["data"])
        mirror.apply(change)
        tally.rows.append((streamed, written, published))
    await pubsub.aclose()
    record = await read_record(redis, SID)
    assert record is not None and record.parts[f"{MID}/{PID}"]["text"] == "".join(deltas), "the live state is whole"
    tally.streamed = sum(len(d.encode()) for d in deltas)
    tally.written = sum(r[1] for r in tally.rows)
    tally.published = sum(r[2] for r in tally.rows)
    tally.writes = len(tally.rows)
    return tally


def tenths(rows: list[tuple[int, int, int]]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The writes of the answer's first and last tenth (by streamed bytes); the part's start and end go with them."""
    total = sum(r[0] for r in rows)
    first, last, seen = [], [], 0
    for row in rows:
        if seen < total / 10:
            first.append(row)
        if seen + row[0] > total * 9 / 10 or row is rows[-1]:
            last.append(row)
        seen += row[0]
    return first, last


async def run(count: int, intervals: list[float], window_ms: float) -> None:
    deltas = answer_deltas(count)
    size = sum(len(d.encode()) for d in deltas)
    print(f"answer: {size} B in {count} deltas ({size / count:.1f} B each), EVENT_COALESCE_MS={window_ms:g}")
    with start_redis() as server:
        redis = Redis.from_url(server.url)
        for interval in intervals:
            tally = await stream(redis, deltas, batches(count, interval, window_ms))
            first, last = tenths(tally.rows)
            total = (tally.written + tally.published) / tally.streamed
            print(
                f"P4 event path, a delta every {interval:g} ms ({tally.writes} writes): written "
                f"{tally.written / tally.streamed:.2f}x + published {tally.published / tally.streamed:.2f}x = "
                f"{total:.2f}x the streamed bytes; first tenth {tally.ratio(first):.2f}x, "
                f"last tenth {tally.ratio(last):.2f}x (goal <= 2.5x, flat)"
            )
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deltas", type=int, default=640)
    parser.add_argument("--interval-ms", default="100,20,5,1", help="comma-separated delta arrival intervals")
    parser.add_argument("--coalesce-ms", type=float, default=50.0)
    args = parser.parse_args()
    intervals = [float(v) for v in args.interval_ms.split(",")]
    anyio.run(run, args.deltas, intervals, args.coalesce_ms)


if __name__ == "__main__":
    main()
