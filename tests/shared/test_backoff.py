from __future__ import annotations

import random

from shared.backoff import Backoff


def test_delays_grow_to_the_cap_with_jitter():
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(7))
    delays = [backoff.failed(now=float(i)) for i in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) > 2.0  # reached the capped range
    assert delays[0] <= 0.5


def test_deadline_counts_from_the_first_failure_and_reset_clears_it():
    backoff = Backoff(base_s=0.1, cap_s=1.0, deadline_s=10.0)
    backoff.failed(now=100.0)
    backoff.failed(now=105.0)
    assert not backoff.expired(now=109.9)
    assert backoff.expired(now=110.0)
    backoff.reset()
    assert not backoff.expired(now=200.0)
    assert Backoff(base_s=0.1, cap_s=1.0).expired(now=1e9) is False
