"""Turns OpenCode's `/event` records into a Delta against the mirror — pure, like poller.mirror.diff.

Text and reasoning parts are stored as "" while they stream; their text arrives only as
`message.part.delta` records. Deltas are appended to the mirror's copy of the part, so clients see the
answer being written; a later poll never takes that text back (see `keep_streamed_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from poller.completion import completed
from poller.mirror import Delta, Mirror, tool_calls_after
from shared.models import object_of, part_key
from shared.opencode.shapes import PART_IDS

STREAMED = ("text", "reasoning")  # a tuple: `in` compares, where a set would hash (a list is unhashable)
# events that change nothing we store, but say the run moved on: poll now rather than at the slow cadence
POLL_TRIGGERS = frozenset({"session.idle", "session.error", "session.status"})


# what each record must carry, as strings, for the mirror to place it: the object it names ("" for the record's own
# properties), then its fields. OpenCode's own records always do; one that does not changes nothing (the next poll
# brings whatever it was about), rather than fail the session it names.
PLACED_BY = {
    "message.updated": ("info", ("id",)),
    "message.part.updated": ("part", PART_IDS),
    "message.part.delta": ("", ("messageID", "partID", "delta")),
    "message.removed": ("", ("messageID",)),
    "message.part.removed": ("", ("messageID", "partID")),
}
IDENTITY_FIELDS = frozenset({"id", "messageID", "sessionID", "type"})  # a delta never extends these


def _placeable(kind: str, props: dict[str, Any]) -> bool:
    name, fields = PLACED_BY[kind]
    value = props.get(name) if name else props
    return isinstance(value, dict) and all(isinstance(value.get(f), str) for f in fields)


def _extends(known: Any, field: Any) -> bool:
    """Whether a delta to `field` may extend the part: a field of text (or none yet), never one of its ids, and
    not once the part has ended: a poll can see the end before the stream brings the last deltas, which the
    stored whole text already holds."""
    if not isinstance(field, str) or field in IDENTITY_FIELDS or not isinstance(known.get(field, ""), str):
        return False
    return not _ended(known)


def _ended(part: Any) -> bool:
    return bool(object_of(part.get("time")).get("end"))


def _done(part: Any) -> bool:
    """A part OpenCode has finished writing: a text that ended, a tool call that completed or failed."""
    if part.get("type") == "tool":
        return object_of(part.get("state")).get("status") in ("completed", "error")
    return _ended(part)


def _behind(finished: Callable[[Any], bool], known: Any, record: Any) -> bool:
    """Whether a record is older than what is known: the known one is finished and the record is not. A poll can
    bring a part (or message) finished while the records of its last moments are still on their way, in a batch of
    their own: applied after it, they showed a tool `running` again, or a whole answer replaced by "", until the
    next batch. OpenCode never unfinishes one; should a client's edit do so, the next poll writes it."""
    return known is not None and finished(known) and not finished(record)


def _streaming(part: Any) -> bool:
    """A text or reasoning part OpenCode is still writing: timed (a user's part has no `time`: it is never
    streamed, and was looked at as if it were on every poll) and not ended."""
    time = part.get("time")
    return part.get("type") in STREAMED and isinstance(time, dict) and not time.get("end")


def streaming_keys(mirror: Mirror) -> set[str]:
    """Parts whose text is still being streamed."""
    return {key for key, part in mirror.parts.items() if _streaming(part)}


def apply_events(mirror: Mirror, events: Iterable[Any], frozen: set[str] | None = None) -> Delta:
    """The change the events make to the mirror (which is not modified: the caller applies it after the write).

    `frozen`: parts that were streaming when the event stream dropped. Deltas carry no offset, so after a
    gap appending would garble the text: those parts keep what they had until OpenCode stores them again
    (their end); the keys are removed from `frozen` as that happens. A delta to a part not yet known freezes
    it the same way. A record without the ids it is placed by (PLACED_BY) is passed over.
    """
    frozen = frozen if frozen is not None else set()
    infos: dict[str, Any] = {}
    parts: dict[str, Any] = {}
    removed_messages: set[str] = set()
    removed_parts: set[str] = set()
    for event in events:
        kind = event.get("type")
        props = event.get("properties")
        if kind not in PLACED_BY or not isinstance(props, dict) or not _placeable(kind, props):
            continue
        if kind == "message.updated":
            info = props["info"]
            if _behind(completed, infos.get(info["id"]) or mirror.infos.get(info["id"]), info):
                continue
            if mirror.infos.get(info.get("id")) != info:
                infos[info["id"]] = info
                removed_messages.discard(info["id"])
        elif kind == "message.part.updated":
            part = props["part"]
            key = part_key(part)
            known = parts.get(key) or mirror.parts.get(key)
            if _behind(_done, known, part):
                continue
            frozen.discard(key)
            part = keep_streamed_text(part, known)
            if mirror.parts.get(key) != part:
                parts[key] = part
                removed_parts.discard(key)
        elif kind == "message.part.delta":
            key = f"{props['messageID']}/{props['partID']}"
            known = parts.get(key) or mirror.parts.get(key)
            field = props.get("field") or "text"
            if known is None:
                frozen.add(key)  # its first deltas went by before the part was known: it must not grow from ""
            elif key not in frozen and _extends(known, field):
                parts[key] = {**known, field: (known.get(field) or "") + props["delta"]}
        elif kind == "message.removed":
            message_id = props["messageID"]
            removed_messages.add(message_id)
            infos.pop(message_id, None)
            for key in [*mirror.parts, *parts]:
                if key.startswith(message_id + "/"):
                    removed_parts.add(key)
                    parts.pop(key, None)
        elif kind == "message.part.removed":
            key = f"{props['messageID']}/{props['partID']}"
            removed_parts.add(key)
            parts.pop(key, None)
    tool_calls = tool_calls_after(mirror.tool_calls, parts, removed_parts)
    return Delta(
        infos=list(infos.values()),
        parts=list(parts.values()),
        removed_messages=sorted(m for m in removed_messages if m in mirror.infos),
        removed_parts=sorted(k for k in removed_parts if k in mirror.parts),
        tool_calls=tool_calls if tool_calls != mirror.tool_calls else None,
    )


def keep_streamed_text(stored: Any, known: Any) -> Any:
    """OpenCode stores a streaming part's text as "": keep the text our deltas built until the part ends."""
    if known is None or not _streaming(stored) or not _streaming(known):
        return stored
    ours = str(known.get("text") or "")
    theirs = str(stored.get("text") or "")
    if len(ours) > len(theirs) and ours.startswith(theirs):
        return {**stored, "text": ours}
    return stored


def any_streaming(messages: Iterable[Any]) -> bool:
    """Whether a part of these messages is still being streamed."""
    return any(_streaming(p) for message in messages for p in message["parts"])


def keep_streamed_texts(mirror: Mirror, messages: Sequence[Any], start: int = 0) -> list[Any]:
    """A polled list with every still-streaming part carrying the text the deltas built; the messages before
    `start` are known to have none, and are passed as they are."""
    out = list(messages[:start])
    for message in islice(messages, start, None):
        if not any(_streaming(p) for p in message["parts"]):  # most are not: no part's key is built nor looked up
            out.append(message)
            continue
        parts = [keep_streamed_text(p, mirror.parts.get(part_key(p))) for p in message["parts"]]
        out.append(
            message
            if all(a is b for a, b in zip(parts, message["parts"], strict=True))
            else {**message, "parts": parts}
        )
    return out
