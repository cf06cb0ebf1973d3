"""The wire format's vocabulary: statuses, session types, the one JSON encoding, part and prompt entries.

The live state's hash fields and the archive row are owned by shared.store.live and shared.store.archive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from shared.ids import LONE_SURROGATE
from shared.nesting import too_deep

Status = Literal["pending", "running", "completed", "error", "cancelled"]
STATUSES: tuple[Status, ...] = ("pending", "running", "completed", "error", "cancelled")
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "error", "cancelled"})
SESSION_TYPES = ("ask", "chat", "admin")


def dumps(value: object) -> str:
    """Compact JSON, the one encoding used for every stored and published value.

    orjson writes it (the poller encodes every part it stores: the standard library cost ~6 % of a replica's CPU);
    the standard library writes what orjson refuses. A lone UTF-16 surrogate (OpenCode's JSON may carry one, e.g. a
    tool output cut mid-character) cannot be written as UTF-8, so it goes out as its JSON escape (`\\ud800`): every
    JSON reader gets the same character back.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, an integer wider than 64 bits, a key that is not a string
        pass
    return escape_lone_surrogates(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def dumps_bytes(value: object) -> bytes:
    """`dumps` as UTF-8, without its text in between: a long session's text is a copy as large (2-4 times where it
    holds characters past Latin-1) of what orjson writes as bytes."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # what dumps writes with the standard library
        return dumps(value).encode()


def escape_lone_surrogates(text: str) -> str:
    """JSON text (the standard library's, with `ensure_ascii=False`) that can be written as UTF-8: each lone
    surrogate, which only a string in it can hold, as its JSON escape."""
    if LONE_SURROGATE.search(text) is None:
        return text
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


TOO_DEEP = "JSON nested too deeply to read"


def loads(raw: bytes | str) -> Any:
    """JSON in, the counterpart of `dumps`: orjson, and the standard library for what orjson refuses but JSON allows
    and OpenCode writes (a lone surrogate's escape, `\\ud800`, e.g. a tool output cut mid-character). ValueError
    when not JSON, or nested too deeply to read (its RecursionError, which no caller expected, once ended a replica).
    A replica that takes over sessions decodes every stored message and part of each: with the standard library
    that was half of a takeover's CPU."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return loads_exactly(raw)


def loads_exactly(raw: bytes | str) -> Any:
    """JSON in by the standard library (what orjson refuses, and integers past 64 bits, which orjson reads as
    floats), held to the depth orjson reads: ValueError when not JSON, or nested too deeply to read."""
    try:
        value = json.loads(raw)
    except RecursionError:  # past the interpreter's stack
        raise ValueError(TOO_DEEP) from None
    if too_deep(value):  # past orjson's 1,024 levels: no step after this one could take it (shared.nesting)
        raise ValueError(TOO_DEEP)
    return value


def object_of(value: Any) -> dict[str, Any]:
    """OpenCode's object, or an empty one where it sent another JSON type: its values are read as its schema says,
    and another version, a plugin or a proxy may send something else (tests/odd_shapes.py)."""
    return value if isinstance(value, dict) else {}


def list_of(value: Any) -> list[Any]:
    """OpenCode's list, or an empty one where it sent another JSON type (see object_of)."""
    return value if isinstance(value, list) else []


def utf16_length(text: str) -> int:
    """A text's length as a browser counts it (UTF-16 code units): the unit of an append's offset and length."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _key_id(id_: str) -> str:
    return id_.replace("%", "%25").replace("/", "%2F")


def _id_of(escaped: str) -> str:
    return escaped.replace("%2F", "/").replace("%25", "%")  # every `%` starts an escape: no match spans two


def part_key_of(message_id: str, part_id: str) -> str:
    """A part's field in `opencode:session:{id}:parts`: `messageID/partID`, with `%` and `/` in an id escaped as
    `%25` and `%2F`. OpenCode's ids hold neither; were one to, its key still splits back into the two ids (was:
    a `/` put the part under another message, and two parts could share one field)."""
    return f"{_key_id(message_id)}/{_key_id(part_id)}"


def part_key(part: Mapping[str, Any]) -> str:
    message_id, part_id = part["messageID"], part["id"]
    if "%" in message_id or "/" in message_id or "%" in part_id or "/" in part_id:
        return part_key_of(message_id, part_id)
    return f"{message_id}/{part_id}"  # OpenCode's own ids, as they are: the poller keys every part it diffs


def message_key_prefix(message_id: str) -> str:
    """What the keys of a message's parts begin with."""
    return _key_id(message_id) + "/"


def part_ids(key: str) -> tuple[str, str]:
    """The message id and part id a part key names (see part_key_of)."""
    message_id, _, part_id = key.partition("/")
    return _id_of(message_id), _id_of(part_id)


def prompt_entry(message_id: str, text: str) -> str:
    """A queued prompt as stored in `opencode:queue:prompts:{id}` (see README: job wire format)."""
    return dumps({"messageID": message_id, "text": text})


def as_text(value: object) -> str:
    """Redis answers bytes (decode_responses=False everywhere); everything we store is UTF-8 text."""
    return value.decode() if isinstance(value, bytes) else str(value)
