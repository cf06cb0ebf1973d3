"""The settled head of a message list's body: its older messages as bytes, so that the next whole list that begins
with the same bytes is decoded only from where they end.

OpenCode rarely changes a session's older messages (compaction, a revert between runs), yet a whole-list poll of a
30-message session decoded, checked and compared all 30 to find that only the newest changed. Python's hash of the
head's bytes (SipHash, keyed per process: no body can be made to collide with another without the key) says in
~5 µs for 27 KB that they are the ones already held, where decoding, checking and comparing them took ~110 µs.

Where a head ends is found by the opening bytes of the message after it, `,{"info":{"id":"msg_…"`, as OpenCode
writes them (JSON.stringify: compact, the id first). A body written otherwise (another server, a proxy that
reformats JSON) has no head, and each whole list is decoded in full, as before. The rest is decoded as `[` and the
bytes after the head: by JSON's grammar that parses only when the cut falls between two messages of the top-level
list, so a look-alike nested in a tool's input is never taken for a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.models import dumps, loads
from shared.opencode.shapes import is_messages

_COMMA = ord(",")


@dataclass(frozen=True, slots=True)
class SettledHead:
    """The first `count` messages of a list's body: `size` bytes (`[`, those messages, the comma after them) whose
    hash is `digest`, followed by the message `next_id`."""

    size: int
    digest: int
    count: int
    next_id: str


class WholeList(NamedTuple):
    """A whole-list poll: `messages` follow the first `skipped` ones, which are byte for byte the head the caller
    passed (it holds them); `head` is the one to pass next time."""

    messages: list[Any]
    skipped: int
    head: SettledHead | None


def rest_of(raw: bytes, head: SettledHead | None) -> list[Any] | None:
    """The messages after `head`, decoded and checked, when `raw` begins with its bytes and the message it was
    followed by; None when the whole body must be decoded."""
    rest = rest_after(raw, head)
    if rest is None or head is None:
        return None
    try:
        messages = loads(rest)
    except ValueError:  # the head's end is not between two messages: a look-alike inside one
        return None
    if not is_messages(messages) or not messages or messages[0]["info"]["id"] != head.next_id:
        return None
    return messages  # type: ignore[no-any-return]


def rest_after(raw: bytes, head: SettledHead | None) -> bytes | None:
    """The messages after `head`, as a JSON array, when `raw` begins with head's very bytes; else None."""
    if head is None or len(raw) <= head.size or raw[head.size - 1] != _COMMA:
        return None
    if hash(memoryview(raw)[: head.size]) != head.digest:
        return None
    return b"[" + raw[head.size :]


def head_before(raw: bytes, next_id: str, count: int, start: int = 0) -> SettledHead | None:
    """The head of `raw` that holds its first `count` messages, found where message `next_id` opens (at or after
    byte `start`); None when the body is not written so that it can be found."""
    at = raw.find(b',{"info":{"id":' + dumps(next_id).encode(), start)
    if at < 0:
        return None
    size = at + 1
    return SettledHead(size=size, digest=hash(memoryview(raw)[:size]), count=count, next_id=next_id)


def next_head(
    raw: bytes, head: SettledHead | None, rest: list[Any], skipped: int, unsettled: int
) -> SettledHead | None:
    """The head to hold after this poll (`rest` follows the first `skipped` messages of `raw`): every message but
    the newest `unsettled`, which a run may still change."""
    count = skipped + len(rest) - unsettled
    if count <= skipped:  # nothing new has settled: the head passed still begins the body
        return head if skipped else None
    start = head.size if skipped and head is not None else 0
    return head_before(raw, rest[count - skipped]["info"]["id"], count, start)
