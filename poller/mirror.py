"""The poller's copy of a session (Mirror), what changed against it (Delta, diff), and the tool calls still
running (`currentToolCalls`) — pure, so it is tested without any server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.models import object_of, part_key, utf16_length

LIVE_TOOL_STATES = ("pending", "running")  # a tuple: `in` compares, where a set would hash (a list is unhashable)


def _live_tool(part: Any) -> bool:
    return part.get("type") == "tool" and object_of(part.get("state")).get("status") in LIVE_TOOL_STATES


def current_tool_calls(messages: Sequence[Any]) -> list[Any]:
    """The tool parts still pending or running, in transcript order (the state's `currentToolCalls`)."""
    return [part for message in messages for part in message.get("parts", ()) if _live_tool(part)]


def tail_tool_calls(known: Sequence[Any], tail: Sequence[Any]) -> list[Any]:
    """currentToolCalls after a tail poll: the older messages' as they were, then the tail's own."""
    in_tail = {m["info"]["id"] for m in tail}
    return [p for p in known if p.get("messageID") not in in_tail] + current_tool_calls(tail)


def tool_calls_after(known: Sequence[Any], changed: dict[str, Any], removed: Iterable[str]) -> list[Any]:
    """currentToolCalls once the `changed` parts (by key) are written and the `removed` ones gone, in key order (which
    is transcript order, as OpenCode's ids sort): from the tool calls `known` and the touched parts alone. The event
    path runs this for every batch of events; computed over every part of the session, a long session paid for its
    whole history on every streamed token."""
    live = {part_key(part): part for part in known}
    for key in removed:
        live.pop(key, None)
    for key, part in changed.items():
        if _live_tool(part):
            live[key] = part
        else:
            live.pop(key, None)
    return [live[key] for key in sorted(live)]


@dataclass(slots=True)
class Mirror:
    """The poller's copy of what Redis holds for one session, kept to diff the next poll against."""

    infos: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, messages: Sequence[Any]) -> Mirror:
        mirror = cls()
        mirror.update(messages)
        return mirror

    def update_tail(self, tail: Sequence[Any]) -> None:
        """Advance by a tail poll: the newest messages replace theirs, older ones stay as they are."""
        for message in tail:
            self.infos[message["info"]["id"]] = message["info"]
            for part in message["parts"]:
                self.parts[part_key(part)] = part
        self.tool_calls = tail_tool_calls(self.tool_calls, tail)

    def update(self, messages: Sequence[Any]) -> None:
        self.infos = {m["info"]["id"]: m["info"] for m in messages}
        self.parts = {part_key(p): p for m in messages for p in m["parts"]}
        self.tool_calls = current_tool_calls(messages)

    def apply(self, delta: Delta) -> None:
        """Advance by a delta that was written (the event path; polls use update())."""
        for info in delta.infos:
            self.infos[info["id"]] = info
        for part in delta.parts:
            self.parts[part_key(part)] = part
        for message_id in delta.removed_messages:
            self.infos.pop(message_id, None)
        for key in delta.removed_parts:
            self.parts.pop(key, None)
        if delta.tool_calls is not None:
            self.tool_calls = delta.tool_calls


@dataclass(frozen=True, slots=True)
class Appended:
    """Text added to the end of one part's `text`; `offset` is its length before (UTF-16 units). `fields`: the
    part's other fields when they changed too (e.g. `time.end` as the part ends), else None."""

    key: str
    offset: int
    text: str
    fields: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """Upserted infos and parts, removed ids, and the new currentToolCalls when they changed.

    `appends`: for the changed parts whose text only grew (see `with_appends`), what was appended; `parts` still
    holds them whole, so the writer may write either form.
    """

    infos: list[Any]
    parts: list[Any]
    removed_messages: list[str]
    removed_parts: list[str]
    tool_calls: list[Any] | None
    appends: tuple[Appended, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.infos or self.parts or self.removed_messages or self.removed_parts) or (
            self.tool_calls is not None
        )


def share_unchanged(previous: Sequence[Any], messages: list[Any], mirror: Mirror | None = None) -> list[Any]:
    """`messages` with each one equal to its namesake in `previous` replaced by that older object; in one that
    changed (or is new), each info and part equal to the older one, or to the one `mirror` holds (what the event
    stream already wrote), is replaced by that. A changed message is its namesake in `previous`, updated in place.

    A poll's parsed list lives until the next one, long enough for the collector's young generation to walk
    it and promote it: at 2,000 sessions, full polls alone kept ~120,000 new objects a second alive, and the
    young collections this caused stalled the event loop 30-400 ms every second or two (P2 polling only,
    fetch gap p99 830 ms; with the collector off, 506 ms). Kept as the old objects, the parsed copies of
    unchanged messages die at once, by reference count, and only what changed survives. A run's last message
    changes on most polls while it grows: its unchanged parts are most of what such a poll parses.
    """
    if not previous and mirror is None:
        return messages
    older = {message["info"]["id"]: message for message in previous}
    known = mirror if mirror is not None else Mirror()
    return [_shared(older.get(message["info"]["id"]), message, known) for message in messages]


def _shared(before: Any, message: Any, known: Mirror) -> Any:
    if before is not None and before == message:
        return before
    info = before["info"] if before is not None else known.infos.get(message["info"]["id"])
    if info is not None and info == message["info"]:
        message["info"] = info
    older = {part.get("id"): part for part in before["parts"]} if before is not None else {}
    parts = [_kept(part, older.get(part.get("id")), known) for part in message["parts"]]
    if before is not None and before.keys() == message.keys():
        # the older message and parts list take the new content in place: only what changed is a new object (a new
        # message and parts list per changed message lived until the next poll: young at every collection)
        before["info"] = message["info"]
        before["parts"][:] = parts
        return before
    message["parts"] = parts
    return message


def _kept(part: Any, before: Any, known: Mirror) -> Any:
    """The older object equal to `part` (the last poll's, else the mirror's), else `part`; each compared once."""
    if before is not None and before == part:
        return before
    mirrored = known.parts.get(part_key(part))
    return mirrored if mirrored is not None and mirrored == part else part


def merge_tail(previous: list[Any], tail: Sequence[Any], limit: int) -> list[Any] | None:
    """The whole list from the last one and a `?limit=` poll of the newest messages; None when they do not
    overlap (more new messages than the tail holds): then only a full poll will do.

    The last list is updated in place and returned: a new 30-message list per poll was, at 8,000 sessions, one
    young object per session holding a reference to every message, about a quarter of what each of the
    collector's young collections walked. Only the tail's slots change.
    """
    if len(tail) < limit:  # the tail is the whole list
        previous[:] = tail
        return previous
    first = tail[0]["info"]["id"]
    for index in range(len(previous) - 1, -1, -1):  # the overlap is near the end
        if previous[index]["info"]["id"] == first:
            previous[index:] = tail
            return previous
    return None


NO_CHANGE = Delta(infos=[], parts=[], removed_messages=[], removed_parts=[], tool_calls=None)


def diff(mirror: Mirror, messages: Sequence[Any], *, partial: bool = False) -> Delta:
    """Compare parsed values (a C-speed dict equality), so an unchanged poll serialises nothing.

    `partial`: `messages` is only the newest part of the list (a tail poll): nothing is taken as removed.
    """
    infos: list[Any] = []
    parts: list[Any] = []
    seen_messages: set[str] = set()
    seen_parts: set[str] = set()
    for message in messages:
        info = message["info"]
        seen_messages.add(info["id"])
        known = mirror.infos.get(info["id"])
        if known is not info and known != info:  # most are the very objects held (share_unchanged): no compare
            infos.append(info)
        for part in message["parts"]:
            key = part_key(part)
            seen_parts.add(key)
            known = mirror.parts.get(key)
            if known is not part and known != part:
                parts.append(part)
    if partial:
        removed_messages, removed_parts = [], []
        tool_calls = tail_tool_calls(mirror.tool_calls, messages)
    else:
        removed_messages = [mid for mid in mirror.infos if mid not in seen_messages]
        removed_parts = [key for key in mirror.parts if key not in seen_parts]
        tool_calls = current_tool_calls(messages)
    return Delta(
        infos=infos,
        parts=parts,
        removed_messages=removed_messages,
        removed_parts=removed_parts,
        tool_calls=tool_calls if tool_calls != mirror.tool_calls else None,
    )


def with_appends(mirror: Mirror, delta: Delta) -> Delta:
    """The delta with `appends` for every changed part the mirror holds whose `text` only grew: streamed text,
    or a part that ends with the text it already had (then only its other fields are new)."""
    appends = []
    for part in delta.parts:
        old = mirror.parts.get(part_key(part))
        if old is None:
            continue
        before, after = old.get("text"), part.get("text")
        if not isinstance(before, str) or not isinstance(after, str) or not after.startswith(before):
            continue
        rest = {k: v for k, v in part.items() if k != "text"}
        fields = None if rest == {k: v for k, v in old.items() if k != "text"} else rest
        appends.append(Appended(part_key(part), utf16_length(before), after[len(before) :], fields))
    return dataclasses.replace(delta, appends=tuple(appends)) if appends else delta
