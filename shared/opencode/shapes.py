"""What the client checks in OpenCode's bodies before handing them on: the minimum its callers rely on (the ids
the poller's mirror is keyed by, the fields a request or status is found by). Anything else in them may be of any
JSON type (tests/odd_shapes.py); a body that fails its check is a malformed response (OpenCodeError)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Shape = Callable[[Any], bool]
PART_IDS = ("id", "messageID")  # what a part is keyed by (`messageID/id`), as strings: the poller places it by them


def is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def is_session(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), str)


def is_messages(value: Any) -> bool:
    """The minimum the poller's mirror relies on: an info with an id, and parts with an id and a messageID."""
    return isinstance(value, list) and all(
        isinstance(m, dict)
        and isinstance(m.get("info"), dict)
        and isinstance(m["info"].get("id"), str)
        and isinstance(m.get("parts"), list)
        and all(is_part(p) for p in m["parts"])
        for m in value
    )


_ID, _MESSAGE_ID = PART_IDS  # unrolled below: every part of every decoded list passes here


def is_part(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(_ID), str) and isinstance(value.get(_MESSAGE_ID), str)


def is_status_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(s, dict) and "type" in s for s in value.values())


def is_requests(value: Any) -> bool:
    """`GET /permission` / `GET /question`: requests with an id and the session they belong to."""
    return isinstance(value, list) and all(
        isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("sessionID"), str) for r in value
    )


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_nothing(value: Any) -> bool:
    return True
