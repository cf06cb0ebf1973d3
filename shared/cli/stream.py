"""The client side of the gateway's session stream: its SSE events, and the session object they build.

Events are framed by httpx-sse, which splits lines only on CR, LF and CRLF as the SSE spec says. httpx's own
`iter_lines` also splits on U+2028, U+2029, U+0085 and the other `str.splitlines` separators, so a prompt
holding one could forge an event line. Used by `watch` and the tests; the poller and gateway never import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from shared.cli.event_shapes import check_session, check_update
from shared.errors import OpenCodeError
from shared.models import utf16_length


class StreamGap(OpenCodeError):
    """An update that does not fit what the client holds (an append at another offset): resync by snapshot."""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event: its name, its JSON data decoded, and the id to resume after (SSE's last event id)."""

    name: str
    data: Any
    id: str | None


def iter_events(response: httpx.Response) -> Iterator[StreamEvent]:
    """The events of a streamed response, read as they arrive."""
    try:
        for sse in EventSource(response).iter_sse():
            if (event := _decode(sse)) is not None:
                yield event
    except SSEError as exc:
        raise OpenCodeError(f"the gateway did not answer with an event stream: {exc}") from None


async def aiter_events(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    """The events of a streamed response, for async clients."""
    try:
        async for sse in EventSource(response).aiter_sse():
            if (event := _decode(sse)) is not None:
                yield event
    except SSEError as exc:
        raise OpenCodeError(f"the gateway did not answer with an event stream: {exc}") from None


def _decode(sse: ServerSentEvent) -> StreamEvent | None:
    if not sse.data:  # the `retry:` line, or a block with no data: nothing to hand on
        return None
    try:
        data = json.loads(sse.data)
    except ValueError:
        raise OpenCodeError(f"the gateway sent a {sse.event} event that is not JSON") from None
    return StreamEvent(sse.event, data, sse.id or None)


# What can go back in a Last-Event-ID header: visible ASCII, of a length any server reads (the gateway's ids are
# its seq numbers).
RESUMABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")


def resumable(event_id: str | None) -> str | None:
    """The id to resume after, or None (resume by a fresh snapshot) for one no HTTP header can carry. Was: an id
    with a character outside Latin-1 ended the watch at its first reconnect as `unexpected UnicodeEncodeError`,
    and one with a control character or of 100 kB was sent as it was."""
    return event_id if event_id is not None and RESUMABLE_ID.fullmatch(event_id) else None


# An append extends a text: it never renames a part, moves it, or changes its kind by way of `field`.
FIXED_FIELDS = frozenset({"id", "messageID", "sessionID", "type"})


def apply_update(state: dict[str, Any], change: dict[str, Any]) -> None:
    """Advance a session object by one `update` event; messages and parts are ordered by id, as in OpenCode.

    Raises StreamGap (and changes nothing) when an append does not extend the text held exactly as the gateway's
    (offset, length, the part's identity): as opencode-stream.js does, parts the update upserts count as held.
    """
    upserted = {(p.get("messageID"), p.get("id")): p for p in change.get("parts") or [] if isinstance(p, dict)}
    appended = _appended(state, upserted, change.get("appends") or [])
    state.update(change.get("state") or {})
    state["seq"] = change["seq"]
    messages = {m["info"]["id"]: m for m in state.get("messages") or []}
    for info in change.get("messages") or []:
        messages.setdefault(info["id"], {"info": info, "parts": []})["info"] = info
    for part in change.get("parts") or []:
        message = messages.setdefault(part["messageID"], {"info": {"id": part["messageID"]}, "parts": []})
        parts = {p["id"]: p for p in message["parts"]}
        parts[part["id"]] = part
        message["parts"] = [parts[k] for k in sorted(parts)]
    for message_id in change.get("removedMessages") or []:
        messages.pop(message_id, None)
    for removed in change.get("removedParts") or []:
        message = messages.get(removed["messageID"])
        if message:
            message["parts"] = [p for p in message["parts"] if p["id"] != removed["id"]]
    state["messages"] = [messages[k] for k in sorted(messages)]
    for (message_id, part_id), part in appended.items():
        message = messages.get(message_id)
        if message is not None:  # a new dict: the held part may be shared with another holder of the same event
            message["parts"] = [part if p["id"] == part_id else p for p in message["parts"]]


def _appended(
    state: dict[str, Any], upserted: dict[tuple[Any, Any], dict[str, Any]], appends: list[Any]
) -> dict[tuple[Any, Any], dict[str, Any]]:
    """The appended parts by (messageID, partID); StreamGap when an append does not fit. An append with `part`
    also replaces the part's other fields."""
    held = {(m["info"]["id"], p.get("id")): p for m in state.get("messages") or [] for p in m.get("parts") or []}
    held |= upserted
    out: dict[tuple[Any, Any], dict[str, Any]] = {}
    for append in appends:
        if not isinstance(append, dict):
            raise StreamGap("an append that is not an object")
        key = (append.get("messageID"), append.get("partID"))
        part = out.get(key) or held.get(key)
        if part is None:
            raise StreamGap(f"an append to part {append.get('partID')}, which this client does not hold")
        out[key] = _extended(part, append)
    return out


def _extended(part: dict[str, Any], append: dict[str, Any]) -> dict[str, Any]:
    """`part` with `append` applied; StreamGap unless the append is well formed and starts where the text ends."""
    field, delta, offset, length = append.get("field"), append.get("delta"), append.get("offset"), append.get("length")
    new = append.get("part")
    text = part.get(field) if isinstance(field, str) else 0
    text = "" if text is None else text
    if field in FIXED_FIELDS or not isinstance(text, str) or not isinstance(delta, str) or not _count(offset):
        raise StreamGap(f"a malformed append to part {append.get('partID')} (field {field!r})")
    if utf16_length(text) != offset:
        raise StreamGap(f"an append at offset {offset} to a text of length {utf16_length(text)}")
    if length != offset + utf16_length(delta) or not _count(length):
        raise StreamGap(f"an append of {utf16_length(delta)} units at {offset} that says its length is {length}")
    same = isinstance(new, dict) and (new.get("id"), new.get("messageID")) == (append["partID"], append["messageID"])
    if new is not None and not same:
        raise StreamGap(f"an append whose `part` is not part {append.get('partID')}")
    return {**(new or part), field: _joined(text, delta)}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _joined(text: str, delta: str) -> str:
    """`text + delta`, an emoji split between them made one character again (as a browser's string is): else the
    text would hold two lone surrogates, which the final snapshot's JSON holds as one character."""
    if text and delta and "\ud800" <= text[-1] <= "\udbff" and "\udc00" <= delta[0] <= "\udfff":
        pair = 0x10000 + ((ord(text[-1]) - 0xD800) << 10) + (ord(delta[0]) - 0xDC00)
        return text[:-1] + chr(pair) + delta[1:]
    return text + delta


class SessionView:
    """What a client holds: the last `snapshot`, advanced one `update` at a time, replaced by `complete`.

    The gateway sends a session's updates in unbroken `seq` order (a gap becomes a fresh snapshot), so an
    update that does not follow the held seq means the stream is broken: StreamGap (`watch` re-syncs by
    snapshot, as opencode-stream.js does), never a wrong session.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.last_id: str | None = None
        self.completed = False

    def apply(self, event: StreamEvent) -> bool:
        """Take one event; True when it changed the session (a `ping` or another event name does not)."""
        if event.name in ("snapshot", "complete"):
            self.state = check_session(event.name, event.data)
            self.completed = event.name == "complete"
        elif event.name == "update":
            seq = check_update(event.data)["seq"]
            held = None if self.state is None else self.state.get("seq")
            if self.state is None or held is None or seq != held + 1:
                raise StreamGap(f"the gateway sent update {seq} after seq {held}")
            apply_update(self.state, event.data)
        else:
            return False
        self.last_id = resumable(event.id)
        return True
