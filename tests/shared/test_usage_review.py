"""shared.usage on hostile input (review): what OpenCode, Redis or a total may hold where a number is expected —
pure."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shared.cli.usage import cost_text, usage_line
from shared.ids import SessionId
from shared.models import dumps, loads
from shared.store.live import LiveState
from shared.usage import Usage

BIG_TOTAL = Usage(input=2**64, output=2**63, reasoning=3, cache_read=2**62, cache_write=5, cost=3.5e12, steps=2**40)


def test_a_sum_past_one_messages_bounds_reads_back_whole():
    """Was: from_json held a sum to one message's bounds, so a session's cost of 1e12 or more read back from its
    live state as 0 (the gateway's session, the ticket's usage), and the CLI printed a total's cost past 1e12 or
    tokens past 2^62 as 0, while `--json` and the SSE `update` events showed the real sum."""
    assert Usage.from_json(loads(dumps(BIG_TOTAL.to_json()))) == BIG_TOTAL
    assert cost_text(BIG_TOTAL.to_json()) == "3500000000000.0000"
    assert f"tokens {2**64:,} input" in usage_line(BIG_TOTAL.to_json())


def test_a_live_sessions_usage_reads_back_from_its_hash_as_written():
    """Was: the cost of a running session's two steps at 6e11 each read back from Redis as 0."""
    steps = [{"role": "assistant", "cost": 6e11, "tokens": {"input": 1}} for _ in range(2)]
    usage = Usage.of_infos(steps)
    state = LiveState(session_id=SessionId("ses_" + "a" * 26), usage=usage)
    decoded = LiveState.decode(state.encode())
    assert decoded is not None and decoded.usage == usage and decoded.usage.cost == 1.2e12


@pytest.mark.parametrize("odd", [None, 5, "x", [], [{"info": {"role": "assistant"}}], True])
def test_a_message_list_entry_that_is_no_object_counts_as_nothing(odd: Any):
    """Was: AttributeError ('… has no attribute get') for an entry of the list that is not an object."""
    one = {"info": {"role": "assistant", "cost": 0.5, "tokens": {"input": 3}}, "parts": []}
    assert Usage.of_messages([odd, one, {"info": odd}]) == Usage(input=3, cost=0.5, steps=1)


@pytest.mark.parametrize("raw", [b"-0.0", b"-0", b"-1e-320", b"1e-320"])
def test_a_cost_of_minus_zero_or_a_tiny_one_reads_as_zero_without_a_sign(raw: bytes):
    """Was: a stored cost of -0.0 (another writer's, or -1e-320 rounded) came back as -0.0: `show` and `history`
    printed `-0.0000`."""
    usage = Usage.from_json(loads(b'{"cost": ' + raw + b', "steps": 1}'))
    assert math.copysign(1.0, usage.cost) == 1.0
    assert cost_text(usage.to_json()) == "0.0000"
    info = Usage.of_info(loads(b'{"role": "assistant", "cost": ' + raw + b"}"))
    assert math.copysign(1.0, info.cost) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        b'{"tokens": {"input": NaN}, "cost": Infinity, "steps": -Infinity}',
        b'{"tokens": {"input": 1e400, "cache": {"read": -1e400}}, "cost": -1, "steps": -1.5e308}',
        b'{"tokens": {"input": "7", "output": true, "cache": [1]}, "cost": {"a": 1}, "steps": null}',
        b'{"tokens": [], "cost": "NaN", "steps": "1"}',
    ],
)
def test_a_stored_sum_that_is_no_count_reads_as_zero(text: bytes):
    """A hash another writer filled: what is not a finite non-negative number reads as 0 and never raises (held
    as before, now that a stored sum has no upper bound)."""
    assert Usage.from_json(loads(text)) == Usage()


def test_an_integral_float_sum_reads_back_as_its_integer():
    """JSON writers that print every number as a float (JavaScript's past 2^53): a count stays a count. Was: a sum
    of 1e20 tokens read back as 0."""
    usage = Usage.from_json(loads(b'{"tokens": {"input": 1e20, "output": 2.0}, "steps": 3.0}'))
    assert (usage.input, usage.output, usage.steps) == (10**20, 2, 3)
