"""shared.usage: the sum over assistant messages, and its JSON form — pure."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.models import loads
from shared.usage import Usage


def assistant(input: int, output: int, cost: float, *, reasoning: int = 0, read: int = 0, write: int = 0) -> dict:
    tokens = {"input": input, "output": output, "reasoning": reasoning, "cache": {"read": read, "write": write}}
    return {"info": {"id": f"msg_{input}", "role": "assistant", "cost": cost, "tokens": tokens}, "parts": []}


USER = {"info": {"id": "msg_0", "role": "user"}, "parts": []}


def test_the_sum_counts_each_assistant_message_as_one_step_and_ignores_user_messages():
    usage = Usage.of_messages(
        [USER, assistant(100, 20, 0.001, reasoning=5, read=7), assistant(50, 10, 0.0002, write=3)]
    )
    assert usage == Usage(input=150, output=30, reasoning=5, cache_read=7, cache_write=3, cost=0.0012, steps=2)


def test_a_message_without_usage_fields_is_a_step_of_nothing():
    usage = Usage.of_messages([{"info": {"id": "msg_1", "role": "assistant", "tokens": {"input": "x"}}, "parts": []}])
    assert usage == Usage(steps=1)


def test_the_json_form_is_opencodes_token_shape_and_reads_back():
    usage = Usage(input=1, output=2, reasoning=3, cache_read=4, cache_write=5, cost=0.5, steps=6)
    assert usage.to_json() == {
        "tokens": {"input": 1, "output": 2, "reasoning": 3, "cache": {"read": 4, "write": 5}},
        "cost": 0.5,
        "steps": 6,
    }
    assert Usage.from_json(json.loads(json.dumps(usage.to_json()))) == usage
    assert Usage.from_json(None) == Usage()


def test_totals_add_up_per_kind():
    a = Usage(input=1, output=2, cost=0.1, steps=1)
    b = Usage(input=10, cache_write=4, cost=0.2, steps=2)
    assert Usage.total([a, b]) == Usage(input=11, output=2, cache_write=4, cost=0.3, steps=3)


@pytest.mark.parametrize("odd", [1e19, 2**63, -5, float("nan"), float("inf"), float("-inf"), "12", True, None])
def test_a_count_or_cost_no_run_could_have_counts_as_nothing(odd):
    """JSON allows 1e19, and the standard library reads NaN and Infinity: such a count is no real one. Was: the
    archive's bigint refused the sum, or int() raised on every poll, and a finished run ended in error."""
    info = {"role": "assistant", "cost": odd, "tokens": {"input": odd, "output": 7, "cache": {"read": odd}}}
    usage = Usage.of_info(info)
    assert (usage.input, usage.output, usage.cache_read, usage.cost, usage.steps) == (0, 7, 0, 0.0, 1)
    assert Usage.of_info(loads(b'{"role": "assistant", "tokens": {"input": NaN, "output": 1e999}}')).output == 0


def test_a_stored_sum_reads_back_whole_past_one_messages_bound():
    big = Usage(input=2**41, output=3, cost=12.5, steps=2)
    assert Usage.from_json(big.to_json()) == big
    assert Usage.of_info({"role": "assistant", "cost": Decimal("NaN"), "tokens": {}}).cost == 0.0
