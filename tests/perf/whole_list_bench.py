"""CPU per whole-list poll, decoded in full against only past its settled head (`shared.opencode.settled`).

    python -m tests.perf.whole_list_bench [--messages 10,30,50,200] [--rounds 2000]

What the poller does with a whole list's body once it has arrived, for transcripts of the capacity benchmark's
shape whose last message is still running: decode and check it (`messages_beyond`), keep the older objects of
what did not change (`share_unchanged`), keep streamed texts and diff it against the mirror (`write_poll`). In
full, as before; then from the settled head on, as when the older messages are byte for byte the ones held.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from poller.event_apply import keep_streamed_texts
from poller.mirror import Mirror, diff, share_unchanged
from poller.session_mirror import TAIL_LIMIT
from shared.models import loads
from shared.opencode import settled, shapes
from tests.perf.load_opencode import compact, transcript


def per_call_us(work: Callable[[], Any], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        work()
    return (time.process_time() - started) / rounds * 1e6


def measure(count: int, rounds: int) -> tuple[int, float, float]:
    raw = b"[" + b",".join(compact(m) for m in transcript("ses_bench", count)) + b"]"
    held = loads(raw)
    mirror = Mirror.of(held)
    head = settled.next_head(raw, None, held, 0, TAIL_LIMIT)
    assert head is not None, "the load transcript is written as OpenCode writes it"

    def in_full() -> Any:
        messages = loads(raw)
        assert shapes.is_messages(messages)
        messages = share_unchanged(held, messages, mirror)
        return diff(mirror, keep_streamed_texts(mirror, messages))

    def past_the_head() -> Any:
        rest = settled.rest_of(raw, head)
        assert rest is not None
        settled.next_head(raw, head, rest, head.count, TAIL_LIMIT)
        messages = held[: head.count] + share_unchanged(held[head.count :], rest, mirror)
        return diff(mirror, keep_streamed_texts(mirror, messages, head.count))

    return len(raw), per_call_us(in_full, rounds), per_call_us(past_the_head, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", default="10,30,50,200")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    for count in (int(v) for v in args.messages.split(",")):
        size, full, settled_us = measure(count, args.rounds)
        print(
            f"whole list of {count} messages ({size:,} B): in full {full:.0f} µs of CPU, past the settled head "
            f"{settled_us:.0f} µs ({full / settled_us:.1f}x less)"
        )


if __name__ == "__main__":
    main()
