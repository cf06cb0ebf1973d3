"""What a run used: tokens by kind, cost and model steps, summed from OpenCode's assistant messages — pure.

OpenCode writes one assistant message per model step, each with its `cost` and `tokens`
(`input`, `output`, `reasoning`, `cache.read`, `cache.write`). The same sum is kept live (`usage` in the live
state) and archived in real columns (sql/005_usage.sql), so a backend can SUM by ticket, type, server or day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

# Cost is kept to this many decimal places: the float sum then round-trips through PostgreSQL's numeric exactly.
COST_DECIMALS = 10


# A count or cost outside these bounds is no real one (JSON allows 1e19, and the standard library reads NaN and
# Infinity): it counts as 0, as a string does. Was: the archive's bigint refused the sum, or int() raised on every
# poll, and a finished run ended in error. Within them, a session's sums stay far inside bigint and JS's integers.
MAX_TOKENS = 2**40  # in one message
MAX_SUM = 2**62  # in a stored sum (from_json): a session's, within bigint
MAX_COST = 1e12


def _count(value: Any, limit: int = MAX_TOKENS) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < limit:
        return 0  # NaN fails the comparison too
    return int(value)


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 0.0
    if isinstance(value, Decimal) and not value.is_finite():  # a Decimal NaN raises where a float's compares false
        return 0.0
    return float(value) if 0 <= value < MAX_COST else 0.0


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
    def _of(cls, tokens: Any, *, cost: Any, steps: int, limit: int = MAX_TOKENS) -> Usage:
        tokens = tokens if isinstance(tokens, dict) else {}
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        return cls(
            input=_count(tokens.get("input"), limit),
            output=_count(tokens.get("output"), limit),
            reasoning=_count(tokens.get("reasoning"), limit),
            cache_read=_count(cache.get("read"), limit),
            cache_write=_count(cache.get("write"), limit),
            cost=_amount(cost),
            steps=steps,
        )

    @classmethod
    def of_infos(cls, infos: Iterable[Mapping[str, Any]]) -> Usage:
        return cls.total(cls.of_info(info) for info in infos)

    @classmethod
    def of_messages(cls, messages: Iterable[Mapping[str, Any]]) -> Usage:
        """From OpenCode's message list (`[{info, parts}]`)."""
        return cls.of_infos(m["info"] for m in messages if isinstance(m.get("info"), dict))

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
        """The inverse of to_json; anything else (absent, malformed) is zero usage."""
        if not isinstance(value, dict):
            return cls()
        steps = _count(value.get("steps"), MAX_SUM)
        return cls._of(value.get("tokens"), cost=value.get("cost"), steps=steps, limit=MAX_SUM)

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
