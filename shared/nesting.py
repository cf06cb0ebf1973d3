"""How deeply nested JSON the layer takes: what orjson reads, 1,024 levels, in every process and every step.

orjson reads 1,024 levels but writes 255; past that the standard library writes, and it, `==` between two such
values and our walks over them (shared.store.unstorable) recurse once or twice a level, which Python stops near
1,000 frames. Was: a tool part of model-written JSON nested some 990 to 1,024 levels deep was read, then failed
its every write and comparison until its session ended in error. Each process makes room at start-up
(`make_room`, in shared.entrypoints), and JSON that only the standard library reads (a lone surrogate's escape)
is held to the same 1,024 levels (`too_deep`).
"""

from __future__ import annotations

import sys
from typing import Any

DEEPEST = 1024  # orjson's own reading limit
FRAMES = 8 * DEEPEST  # two frames a level for a walk, the levels a stored or published value wraps it in, the caller


def make_room() -> None:
    """Python's recursion limit raised to FRAMES (never lowered): the process's own choice, made once at start."""
    if sys.getrecursionlimit() < FRAMES:
        sys.setrecursionlimit(FRAMES)


def too_deep(value: Any) -> bool:
    """More than DEEPEST levels of arrays and objects; walked without recursion, stopping at the first too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > DEEPEST:
            return True
        stack.extend((child, level + 1) for child in children)
    return False
