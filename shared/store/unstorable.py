"""How the archive keeps characters PostgreSQL refuses: U+0000 (in jsonb and text) and lone surrogates.

Each such character is written as U+FFFF followed by its code point in four lower-case hex digits, and U+FFFF
itself as U+FFFF "ffff", so the form is reversible: `restore(escape(s)) == s` for every string. U+FFFF is a
Unicode noncharacter (reserved for internal use), so text that needs no escaping is stored byte for byte.
Rows are escaped on the way into PostgreSQL and restored on the way out (shared.store.archive); a reader of
the table that bypasses us sees the escaped form.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shared.models import loads, loads_exactly

ESCAPE = "\uffff"
_ESCAPE_UTF8 = ESCAPE.encode()
_UNSTORABLE = re.compile("[\x00\ud800-\udfff\uffff]")
_ESCAPED = re.compile(ESCAPE + "([0-9a-f]{4})")
_LONG_INTEGER = re.compile("[0-9]{20}")
_LONG_INTEGER_UTF8 = re.compile(b"[0-9]{20}")
_NUL_IN_JSON = "\\u0000"  # how json.dumps writes U+0000; the other two stay raw with ensure_ascii=False


def _escape_match(match: re.Match[str]) -> str:
    return f"{ESCAPE}{ord(match.group()):04x}"


def _restore_match(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def escape_text(text: str) -> str:
    return _UNSTORABLE.sub(_escape_match, text)


def restore_text(text: str) -> str:
    return _ESCAPED.sub(_restore_match, text) if ESCAPE in text else text


def _walk(value: Any, convert: Any) -> Any:
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, list):
        return [_walk(item, convert) for item in value]
    if isinstance(value, dict):
        return {convert(key): _walk(item, convert) for key, item in value.items()}
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def dumps_jsonb(value: Any) -> str:
    """JSON for a jsonb parameter, escaped only when it holds something to escape (one scan otherwise). A float
    that is no JSON number is written null, as the live copy (orjson) holds it: the standard library reads
    OpenCode's NaN and Infinity (and 1e400) and would write them back, which jsonb refuses. Was: every archive
    write of such a run (or record of such a request) failed, and the session ended in error unarchived."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        value = _finite(value)
        text = json.dumps(value, ensure_ascii=False)
    if _NUL_IN_JSON in text or _UNSTORABLE.search(text):
        text = json.dumps(_walk(value, escape_text), ensure_ascii=False)
    return text


def loads_jsonb(data: str | bytes) -> Any:
    """A jsonb column's value as it was before `dumps_jsonb` (one scan when nothing was escaped). Read as OpenCode's
    bodies are (orjson, up to 1,024 levels), so a value nested deeper (another backend's metadata) is not JSON here
    either: the standard library, with the room every process makes for deep JSON, read 8,000 levels. But orjson
    reads an integer past 64 bits as a float, and metadata may hold one exactly (up to 1,000 digits): a value with
    a run of 20 digits is read by the standard library, held to the same depth."""
    long_integer = _LONG_INTEGER.search(data) if isinstance(data, str) else _LONG_INTEGER_UTF8.search(data)
    value = loads(data) if long_integer is None else loads_exactly(data)
    escaped = _ESCAPE_UTF8 in data if isinstance(data, bytes) else ESCAPE in data
    return _walk(value, restore_text) if escaped else value
