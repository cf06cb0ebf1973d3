"""Exponential backoff with full jitter and a deadline: how long to wait, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Counts consecutive failures; `expired` turns true once they have lasted longer than deadline_s."""

    base_s: float
    cap_s: float
    deadline_s: float | None = None
    failures: int = 0
    first_failure_at: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    def failed(self, now: float) -> float:
        """Record a failure at `now`; returns the delay before the next attempt."""
        if self.first_failure_at is None:
            self.first_failure_at = now
        self.failures += 1
        ceiling: float = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 32))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def expired(self, now: float) -> bool:
        if self.deadline_s is None or self.first_failure_at is None:
            return False
        return now - self.first_failure_at >= self.deadline_s

    def reset(self) -> None:
        self.failures = 0
        self.first_failure_at = None
