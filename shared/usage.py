"""What a run used: tokens by kind, cost and model steps, summed from OpenCode's assistant messages — pure.

OpenCode writes one assistant message per model step, each with its `cost` and `tokens`
(`input`, `output`, `reasoning`, `cache.read`, `cache.write`). The same sum is kept live (`usage` in the live
state) and archived in real columns (sql/005_usage.sql), so a backend can SUM by ticket, type, server or day.

What is counted: every entry of the message list whose `info` is an object with `role` "assistant" is one step.
In it, a token count is a JSON number from 0 up to 2^40 (a fraction dropped) and a cost one from 0 up to 1e12;
anything else (negative, larger, NaN or Infinity, a string, boolean, null, object or array) counts as 0 and the
step still counts. A session's sum past its column (bigint, steps integer) is archived as the column's largest
value; sums read back (live state, totals) are taken whole. (sql/005_usage.sql filled the columns of rows
archived before it by its own, older rules.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

# Cost is kept to this many decimal places: the float sum then round-trips through PostgreSQL's numeric exactly.
COST_DECIMALS = 10


# A count or cost of one message outside these bounds is no real one (JSON allows 1e19, and the standard library
# reads NaN and Infinity): it counts as 0, as a string does. Was: the archive's bigint refused the sum, or int()
# raised on every poll, and a finished run ended in error.
MAX_TOKENS = 2**40  # in one message
MAX_COST = 1e12  # of one message
# The archive's columns: a sum past one is stored as its largest value (2^23 steps of 2^40 tokens pass bigint).
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1


def _count(value: Any, limit: float = MAX_TOKENS) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < limit:
        return 0  # NaN fails the comparison too
    return int(value)


def _amount(value: Any, limit: float = MAX_COST) -> float:
    """A cost; `+ 0.0` drops the sign of -0.0 (was printed `-0.0000`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 0.0
    if isinstance(value, Decimal) and not value.is_finite():  # a Decimal NaN raises where a float's compares false
        return 0.0
    if not 0 <= value < limit:
        return 0.0
    try:
        amount = float(value) + 0.0
    except OverflowError:  # an integer past the floats: no cost we could add up
        return 0.0
    return amount if math.isfinite(amount) else 0.0  # a Decimal past the floats reads as inf


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Sums over a session's (or several sessions') assistant messages; all zero for a run not started."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    steps: int = 0

    @classmethod
    def of_info(cls, info: Mapping[str, Any]) -> Usage:
        """One message's usage: a step if it is an assistant message, nothing otherwise."""
        if info.get("role") != "assistant":
            return cls()
        return cls._of(info.get("tokens"), cost=info.get("cost"), steps=1)

    @classmethod
    def _of(cls, tokens: Any, *, cost: Any, steps: int, limit: float = MAX_TOKENS, most: float = MAX_COST) -> Usage:
        tokens = tokens if isinstance(tokens, dict) else {}
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        return cls(
            input=_count(tokens.get("input"), limit),
            output=_count(tokens.get("output"), limit),
            reasoning=_count(tokens.get("reasoning"), limit),
            cache_read=_count(cache.get("read"), limit),
            cache_write=_count(cache.get("write"), limit),
            cost=_amount(cost, most),
            steps=steps,
        )

    @classmethod
    def of_infos(cls, infos: Iterable[Mapping[str, Any]]) -> Usage:
        return cls.total(cls.of_info(info) for info in infos)

    @classmethod
    def of_messages(cls, messages: Iterable[Mapping[str, Any]]) -> Usage:
        """From OpenCode's message list (`[{info, parts}]`); an entry that is no such object is no step."""
        return cls.of_infos(m["info"] for m in messages if isinstance(m, dict) and isinstance(m.get("info"), dict))

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        acc = cls()
        for u in usages:
            acc = cls(
                input=acc.input + u.input,
                output=acc.output + u.output,
                reasoning=acc.reasoning + u.reasoning,
                cache_read=acc.cache_read + u.cache_read,
                cache_write=acc.cache_write + u.cache_write,
                cost=acc.cost + u.cost,
                steps=acc.steps + u.steps,
            )
        return replace(acc, cost=round(acc.cost, COST_DECIMALS))

    @classmethod
    def from_json(cls, value: Any) -> Usage:
        """The inverse of to_json, for a sum of any size (a session's, a ticket's total); what is not a finite
        non-negative number reads as 0. Was: held to one message's bounds, a live session's cost of 1e12 or more,
        and a total's, read back as 0."""
        if not isinstance(value, dict):
            return cls()
        steps = _count(value.get("steps"), math.inf)
        return cls._of(value.get("tokens"), cost=value.get("cost"), steps=steps, limit=math.inf, most=math.inf)

    @classmethod
    def of_columns(cls, row: Any) -> Usage:
        """From an archive row's usage columns (tokens_input … steps), as read: numbers of any size."""
        return cls(
            input=int(row.tokens_input),
            output=int(row.tokens_output),
            reasoning=int(row.tokens_reasoning),
            cache_read=int(row.tokens_cache_read),
            cache_write=int(row.tokens_cache_write),
            cost=_amount(row.cost, math.inf),
            steps=int(row.steps),
        )

    def columns(self) -> dict[str, Any]:
        """The archive's column values, in sql/005_usage.sql's order, each held to its column's range. Was: a sum
        past bigint (or steps past integer) made PostgreSQL refuse every write of the session's archive."""
        return {
            "tokens_input": min(self.input, MAX_BIGINT),
            "tokens_output": min(self.output, MAX_BIGINT),
            "tokens_reasoning": min(self.reasoning, MAX_BIGINT),
            "tokens_cache_read": min(self.cache_read, MAX_BIGINT),
            "tokens_cache_write": min(self.cache_write, MAX_BIGINT),
            "cost": Decimal(repr(self.cost)),
            "steps": min(self.steps, MAX_INTEGER),
        }

    def to_json(self) -> dict[str, Any]:
        """The `usage` object of the session (live state, archive, API): OpenCode's token shape, cost, steps."""
        return {
            "tokens": {
                "input": self.input,
                "output": self.output,
                "reasoning": self.reasoning,
                "cache": {"read": self.cache_read, "write": self.cache_write},
            },
            "cost": self.cost,
            "steps": self.steps,
        }
