"""What the client checks in OpenCode's bodies before handing them on: the minimum its callers rely on (the ids
the poller's mirror is keyed by, the fields a request or status is found by). Anything else in them may be of any
JSON type (tests/odd_shapes.py); a body that fails its check is a malformed response (OpenCodeError)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

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


def is_list(value: Any) -> bool:
    return isinstance(value, list)


# The instance-wide bodies (every session's status, every pending request) are checked entry by entry: one entry of
# another shape is passed over (`usable_statuses`, `usable_requests`), never the whole body, which would stop every
# session on the server from reading its status or getting its answers.


def is_status(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def is_request(value: Any) -> bool:
    """A permission request or question: an id, and the session it belongs to."""
    return isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("sessionID"), str)


def usable_statuses(statuses: dict[str, Any], url: str) -> dict[str, Any]:
    """The entries of `GET /session/status` with a `type`; the others are passed over, with a warning."""
    usable = {sid: status for sid, status in statuses.items() if is_status(status)}
    _passed_over(url, len(statuses) - len(usable))
    return usable


def usable_requests(requests: list[Any], url: str) -> list[dict[str, Any]]:
    """The requests of `GET /permission` or `GET /question` with an id and a session; the others are passed over,
    with a warning."""
    usable = [request for request in requests if is_request(request)]
    _passed_over(url, len(requests) - len(usable))
    return usable


def _passed_over(url: str, count: int) -> None:
    if count:
        log.warning("opencode_entries_passed_over", url=url, entries=count)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_nothing(value: Any) -> bool:
    return True
