"""The wall clock in epoch milliseconds: the unit of every timestamp we store, publish and compare."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
