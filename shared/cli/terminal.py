"""Everything the CLI writes goes out here: text for people is shown, never obeyed, by the terminal.

Session content comes from models, tools and users. An ESC sequence in it could set the window title, clear the
screen, hide text or forge a hyperlink; a carriage return or backspace could overwrite what was printed; a bidi
override could reorder a line ("Trojan source"). `visible` writes each such character as its escape (`\\x1b`,
`\\u202e`) and leaves every other character as it is. Machine output (JSON) is written exactly: JSON already
escapes U+0000-U+001F, and its consumers need the values byte for byte.
"""

from __future__ import annotations

import json
import re
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


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Write text for people (stdout, or stderr with `err`), made `visible`."""
    click.echo(visible(text), err=err, nl=nl)


def echo_exact(text: str) -> None:
    """Write machine output (a JSON document or line) to stdout exactly as given."""
    click.echo(text)


def emit_json(value: Any) -> None:
    """Machine output: `value` as indented JSON, every character written as itself rather than escaped (but a lone
    surrogate, which UTF-8 cannot carry: as its escape, as in every JSON answer of ours)."""
    echo_exact(escape_lone_surrogates(json.dumps(value, indent=2, ensure_ascii=False, default=str)))


def visible_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A structlog processor: the CLI's warnings on stderr may quote a server, so their text is made `visible`
    too (the console renderer writes str values raw, and others with repr, which escapes them already)."""
    return {key: visible(value) if isinstance(value, str) else value for key, value in event.items()}
