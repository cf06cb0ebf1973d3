"""What `watch` takes from a gateway before it applies or prints an event: the shapes its code indexes into.

Whatever sits at these places (the ids messages and parts are keyed by, the lists they are kept in, `seq`) is
what SessionView and the printer use as keys; a gateway that answers anything else (another service on that
port, a proxy, a broken build) is MalformedEvent naming the place. Was: exit 1 all the same, but as
`error: unexpected KeyError: 'messageID'` or `AttributeError: 'list' object has no attribute 'get'`. Values
below the ids (text, tool state, errors) are content: the printer takes them in any shape.
"""

from __future__ import annotations

from typing import Any

from shared.errors import OpenCodeError


class MalformedEvent(OpenCodeError):
    """An event whose data does not have the shape of the gateway's: the watch cannot go on."""


def _fail(event: str, where: str, what: str) -> MalformedEvent:
    return MalformedEvent(f"the gateway sent a malformed {event} event: {where} {what}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value: Any, event: str, where: str) -> list[Any]:
    """A list, or nothing (absent, null); anything else fails."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(event, where, "is not a list")
    return value


def _object(value: Any, event: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(event, where, "is not an object")
    return value


def _ids(item: Any, event: str, where: str, names: tuple[str, ...]) -> None:
    """`item` is an object whose fields `names` are strings (the keys the session is held by)."""
    found = _object(item, event, where)
    for name in names:
        if not isinstance(found.get(name), str):
            raise _fail(event, f"{where}.{name}", "is not a string")


def _messages(value: Any, event: str, where: str) -> None:
    for number, message in enumerate(_list(value, event, where)):
        at = f"{where}[{number}]"
        _ids(_object(message, event, at).get("info"), event, f"{at}.info", ("id",))
        for index, part in enumerate(_list(message.get("parts"), event, f"{at}.parts")):
            _ids(part, event, f"{at}.parts[{index}]", ("id",))


def check_session(event: str, data: Any) -> dict[str, Any]:
    """A `snapshot` or `complete` event's session object, checked where the watch indexes into it."""
    session = _object(data, event, "its data")
    if (event == "snapshot" or "seq" in session) and not _is_count(session.get("seq")):
        raise _fail(event, "seq", "is not an integer")
    _messages(session.get("messages"), event, "messages")
    _list(session.get("pending"), event, "pending")
    return session


def check_update(data: Any) -> dict[str, Any]:
    """An `update` event's change, checked where apply_update indexes into it (appends check themselves)."""
    change = _object(data, "update", "its data")
    if not _is_count(change.get("seq")):
        raise _fail("update", "seq", "is not an integer")
    state = change.get("state")
    if state is not None:
        _messages(_object(state, "update", "state").get("messages"), "update", "state.messages")
        _list(state.get("pending"), "update", "state.pending")
    for number, info in enumerate(_list(change.get("messages"), "update", "messages")):
        _ids(info, "update", f"messages[{number}]", ("id",))
    for number, part in enumerate(_list(change.get("parts"), "update", "parts")):
        _ids(part, "update", f"parts[{number}]", ("id", "messageID"))
    for number, removed in enumerate(_list(change.get("removedMessages"), "update", "removedMessages")):
        if not isinstance(removed, str):
            raise _fail("update", f"removedMessages[{number}]", "is not a string")
    for number, removed in enumerate(_list(change.get("removedParts"), "update", "removedParts")):
        _ids(removed, "update", f"removedParts[{number}]", ("id", "messageID"))
    _list(change.get("appends"), "update", "appends")
    return change
