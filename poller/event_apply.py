"""Turns OpenCode's `/event` records into a Delta against the mirror — pure, like poller.mirror.diff.

Text and reasoning parts are stored as "" while they stream; their text arrives only as
`message.part.delta` records. Deltas are appended to the mirror's copy of the part, so clients see the
answer being written; a later poll never takes that text back (see `keep_streamed_text`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from poller.completion import completed
from poller.mirror import Delta, Mirror, tool_calls_after
from shared.models import message_key_prefix, object_of, part_key, part_key_of
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
    """Whether a delta to `field` may extend the part: a field of text (or none yet), never one of its ids, of a
    text or reasoning part still streaming: not once it has ended (a poll can see the end before the stream brings
    the last deltas, which the stored whole text already holds)."""
    if not isinstance(field, str) or field in IDENTITY_FIELDS or not isinstance(known.get(field, ""), str):
        return False
    return streaming(known)  # OpenCode streams only text and reasoning: another part (or type) takes none


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


def streaming(part: Any) -> bool:
    """A text or reasoning part OpenCode is still writing: timed (a user's part has no `time`: it is never
    streamed, and was looked at as if it were on every poll) and not ended."""
    time = part.get("time")
    return part.get("type") in STREAMED and isinstance(time, dict) and not time.get("end")


def streaming_keys(mirror: Mirror) -> set[str]:
    """Parts whose text is still being streamed."""
    return {key for key, part in mirror.parts.items() if streaming(part)}


GAP: dict[str, Any] = {"type": "session-layer.gap"}
"""Put in an inbox, by identity, where the event stream dropped while records still waited in it: the texts streaming
up to that point lost deltas and stop growing; those that start after it grow as usual."""


class _Growth:
    """One part's text grown by this batch's deltas: the pieces, joined once when the batch is done (each delta
    copied the whole text so far: a long answer cost its length on every token), and the event id of each, so that a
    record that comes twice or late within the batch is dropped or put in its place."""

    __slots__ = ("field", "ids", "pieces")

    def __init__(self, field: str, text: str, last_id: str) -> None:
        self.field = field
        self.pieces = [text]
        self.ids = [last_id]  # the text held before the batch: its last record's id ("" when none is known)

    def add(self, event_id: Any, piece: str) -> bool | None:
        """Place the piece by its record's id: True when placed, None for a record placed already (a repeat), False
        when it is older than the text the batch started from (it cannot be placed)."""
        ids = self.ids
        if not isinstance(event_id, str) or event_id > ids[-1]:  # in order (or nothing to order it by)
            ids.append(event_id if isinstance(event_id, str) else ids[-1])
            self.pieces.append(piece)
            return True
        at = bisect_left(ids, event_id)
        if ids[at] == event_id:
            return None
        if at == 0:
            return False
        ids.insert(at, event_id)
        self.pieces.insert(at, piece)
        return True


def apply_events(
    mirror: Mirror, events: Iterable[Any], frozen: set[str] | None = None, last_ids: dict[str, str] | None = None
) -> Delta:
    """The change the events make to the mirror (which is not modified: the caller applies it after the write).

    `frozen`: parts that lost deltas (the stream dropped, a GAP, a delta before the part was known, one that came
    after a later one). Deltas carry no offset, so appending would garble the text: those parts keep what they had
    until OpenCode stores them whole (their end); the keys are removed from `frozen` as that happens. `last_ids`: the
    id of each streaming part's last applied record, kept across batches: a record that comes again is dropped, one
    older than the last freezes its part. A record without the ids it is placed by (PLACED_BY), or whose object
    names another session than the record, is passed over.
    """
    frozen = frozen if frozen is not None else set()
    last_ids = last_ids if last_ids is not None else {}
    infos: dict[str, Any] = {}
    parts: dict[str, Any] = {}
    removed_messages: set[str] = set()
    removed_parts: set[str] = set()
    growing: dict[str, _Growth] = {}

    def known_part(key: str) -> Any:
        if key in parts:
            growth = growing.pop(key, None)
            if growth is not None:  # the text matters now: join what this batch grew
                parts[key][growth.field] = "".join(growth.pieces)
            return parts[key]
        return None if key in removed_parts else mirror.parts.get(key)

    for event in events:
        if event is GAP:
            for key in list(growing):
                known_part(key)
            held = mirror.parts.items()
            frozen |= {k for k, p in parts.items() if streaming(p)}
            frozen |= {k for k, p in held if k not in parts and k not in removed_parts and streaming(p)}
            continue
        kind = event.get("type")
        props = event.get("properties")
        if kind not in PLACED_BY or not isinstance(props, dict) or not _placeable(kind, props):
            continue
        if kind == "message.updated":
            info = props["info"]
            if not _same_session(info, props) or _behind(
                completed, infos.get(info["id"]) or mirror.infos.get(info["id"]), info
            ):
                continue
            removed_messages.discard(info["id"])
            if mirror.infos.get(info["id"]) != info:
                infos[info["id"]] = info
            else:  # back to what is written (an earlier record of this batch changed it)
                infos.pop(info["id"], None)
        elif kind == "message.part.updated":
            part = props["part"]
            if not _same_session(part, props):
                continue
            key = part_key(part)
            known = known_part(key)
            if _behind(_done, known, part):
                continue
            event_id, last = event.get("id"), last_ids.get(key, "")
            if not streaming(part):  # stored whole: deltas neither extend it nor need placing any more
                frozen.discard(key)
                last_ids.pop(key, None)
            elif isinstance(event_id, str) and event_id > last:
                last_ids[key] = event_id  # a delta older than this record is older than its text
            elif isinstance(event_id, str) and part.get("text"):
                frozen.add(key)  # a text OpenCode held before deltas already applied: those after it are unknown
            if not part.get("text"):  # OpenCode's stored "" while it streams: the deltas' text stays
                part = keep_streamed_text(part, known)
            removed_parts.discard(key)
            if mirror.parts.get(key) != part:
                parts[key] = part
            else:  # back to what is written (an earlier record of this batch changed it)
                parts.pop(key, None)
        elif kind == "message.part.delta":
            key = part_key_of(props["messageID"], props["partID"])
            growth = growing.get(key)
            known = parts[key] if growth is not None else known_part(key)
            field = props.get("field") or "text"
            if known is None:
                frozen.add(key)  # its first deltas went by before the part was known: it must not grow from ""
                continue
            if key in frozen or not _extends(known, field):
                continue
            if growth is not None and growth.field != field:
                known, growth = known_part(key), None  # another field grew: joined first
            event_id = event.get("id")
            if growth is None:
                growth = _Growth(field, str(known.get(field) or ""), last_ids.get(key, ""))
            placed = growth.add(event_id, props["delta"])
            if not placed:
                if placed is False:
                    frozen.add(key)  # older than a record already applied: a delta lost in between
                continue
            if key not in growing:
                growing[key] = growth
                parts[key] = {**known}  # its field is filled from the pieces once the batch is done
            if isinstance(event_id, str) and event_id > last_ids.get(key, ""):
                last_ids[key] = event_id
        elif kind == "message.removed":
            message_id = props["messageID"]
            removed_messages.add(message_id)
            infos.pop(message_id, None)
            for key in [*mirror.parts, *parts]:
                if key.startswith(message_key_prefix(message_id)):
                    _forget(key, removed_parts, parts, growing, frozen, last_ids)
        elif kind == "message.part.removed":
            _forget(part_key_of(props["messageID"], props["partID"]), removed_parts, parts, growing, frozen, last_ids)
    for key in list(growing):
        known_part(key)
    tool_calls = tool_calls_after(mirror.tool_calls, parts, removed_parts)
    return Delta(
        infos=list(infos.values()),
        parts=list(parts.values()),
        removed_messages=sorted(m for m in removed_messages if m in mirror.infos),
        removed_parts=sorted(k for k in removed_parts if k in mirror.parts),
        tool_calls=tool_calls if tool_calls != mirror.tool_calls else None,
    )


def _forget(
    key: str,
    removed: set[str],
    parts: dict[str, Any],
    growing: dict[str, _Growth],
    frozen: set[str],
    last_ids: dict[str, str],
) -> None:
    """A removed part: gone from the batch, and what was known of its stream with it (a delta that comes for it
    now finds it unknown and freezes it, as a part whose first deltas came before it)."""
    removed.add(key)
    parts.pop(key, None)
    growing.pop(key, None)
    frozen.discard(key)
    last_ids.pop(key, None)


def _same_session(value: Any, props: dict[str, Any]) -> bool:
    """A record is routed by `properties.sessionID`; an info or part that names another session is not its."""
    own, routed = value.get("sessionID"), props.get("sessionID")
    return not isinstance(own, str) or not isinstance(routed, str) or own == routed


def keep_streamed_text(stored: Any, known: Any) -> Any:
    """OpenCode stores a streaming part's text as "": keep the text our deltas built until the part ends."""
    if known is None or not streaming(stored) or not streaming(known):
        return stored
    ours = str(known.get("text") or "")
    theirs = str(stored.get("text") or "")
    if len(ours) > len(theirs) and ours.startswith(theirs):
        return {**stored, "text": ours}
    return stored


def any_streaming(messages: Iterable[Any]) -> bool:
    """Whether a part of these messages is still being streamed."""
    return any(streaming(p) for message in messages for p in message["parts"])


def keep_streamed_texts(mirror: Mirror, messages: Sequence[Any], start: int = 0) -> list[Any]:
    """A polled list with every still-streaming part carrying the text the deltas built; the messages before
    `start` are known to have none, and are passed as they are."""
    out = list(messages[:start])
    for message in islice(messages, start, None):
        if not any(streaming(p) for p in message["parts"]):  # most are not: no part's key is built nor looked up
            out.append(message)
            continue
        parts = [keep_streamed_text(p, mirror.parts.get(part_key(p))) for p in message["parts"]]
        out.append(
            message
            if all(a is b for a, b in zip(parts, message["parts"], strict=True))
            else {**message, "parts": parts}
        )
    return out
