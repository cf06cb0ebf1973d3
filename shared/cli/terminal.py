"""Everything the CLI writes goes out here: text for people is shown, never obeyed, by the terminal.

Session content comes from models, tools and users. An ESC sequence in it could set the window title, clear the
screen, hide text or forge a hyperlink; a carriage return or backspace could overwrite what was printed; a bidi
override could reorder a line ("Trojan source"). `visible` writes each such character as its escape (`\\x1b`,
`\\u202e`) and leaves every other character as it is. Machine output (JSON) is written exactly: JSON already
escapes U+0000-U+001F, and its consumers need the values byte for byte.

A terminal that is not UTF-8 (a latin-1 or cp1252 locale, `PYTHONIOENCODING`) has no byte for most characters:
text for people shows such a character as its escape too, and JSON is written with `\\uXXXX` escapes then, so it
stays JSON holding the same characters.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from structlog.typing import EventDict, WrappedLogger

from shared.models import escape_lone_surrogates

# C0 controls but tab and newline, DEL, C1 controls (U+009B is a one-byte CSI), the bidi embeddings, overrides
# and isolates, and lone surrogates (not text: a terminal cannot show them, and writing one fails).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every character that controls a terminal replaced by its escape; tab and newline kept."""
    return _UNSAFE.sub(_escape, text)


def one_line(value: object) -> str:
    """A field shown inside one line (a tool title, a question, a label): its line breaks and runs of whitespace
    become one space, so content cannot start a line that looks like the CLI's own."""
    return " ".join(str(value).split())


def _encoding(err: bool) -> str:
    return getattr(sys.stderr if err else sys.stdout, "encoding", None) or "utf-8"


def _writable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Write text for people (stdout, or stderr with `err`), made `visible`, each character the stream's encoding
    cannot write as its escape. Was: `unexpected UnicodeEncodeError` (exit 1) halfway through a session."""
    shown = visible(text)
    encoding = _encoding(err)
    if not _writable(shown, encoding):
        shown = shown.encode(encoding, "backslashreplace").decode(encoding)
    click.echo(shown, err=err, nl=nl)


def echo_exact(text: str) -> None:
    """Write machine output (a JSON document or line) to stdout exactly as given."""
    click.echo(text)


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON for stdout, every character written as itself rather than escaped (but a lone surrogate,
    which UTF-8 cannot carry: as its escape, as in every JSON answer of ours); all in `\\uXXXX` escapes when
    stdout's encoding cannot write it (a latin-1 terminal)."""
    text = escape_lone_surrogates(json.dumps(value, indent=indent, ensure_ascii=False, default=str))
    if _writable(text, _encoding(err=False)):
        return text
    return json.dumps(value, indent=indent, ensure_ascii=True, default=str)


def emit_json(value: Any) -> None:
    """Machine output: `value` as indented JSON (json_text)."""
    echo_exact(json_text(value, indent=2))


def emit_json_line(value: Any) -> None:
    """Machine output: `value` as one line of JSON (json_text), as NDJSON takes it."""
    echo_exact(json_text(value))


def visible_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A structlog processor: the CLI's warnings on stderr may quote a server, so their text is made `visible`
    too (the console renderer writes str values raw, and others with repr, which escapes them already)."""
    return {key: visible(value) if isinstance(value, str) else value for key, value in event.items()}
