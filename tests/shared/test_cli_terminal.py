"""shared.cli.terminal: characters that drive a terminal are written as escapes; every other character as it is."""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import pytest

from shared.cli import terminal
from shared.cli.pending import answered_lines, request_lines
from shared.cli.render import part_line
from shared.cli.terminal import one_line, visible, visible_fields

CLI_DIR = Path(terminal.__file__).parent
# A write to the terminal that does not go through shared.cli.terminal.
DIRECT_WRITE = re.compile(
    r"(?<![\w.])(?:print|click\.echo|click\.secho|click\.echo_via_pager|sys\.std(?:out|err)\.write)\("
)


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x00", r"\x00"),  # NUL
        ("\x07", r"\x07"),  # BEL
        ("\x08", r"\x08"),  # backspace
        ("\x0b", r"\x0b"),
        ("\x0c", r"\x0c"),
        ("\r", r"\x0d"),  # a carriage return would overwrite the line
        ("\x1b", r"\x1b"),  # ESC
        ("\x1f", r"\x1f"),
        ("\x7f", r"\x7f"),  # DEL
        ("\x80", r"\x80"),
        ("\x9b", r"\x9b"),  # CSI in one character
        ("\x9d", r"\x9d"),  # OSC in one character
        ("\x9f", r"\x9f"),
        ("\u202a", r"\u202a"),
        ("\u202d", r"\u202d"),
        ("\u202e", r"\u202e"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066", r"\u2066"),
        ("\u2069", r"\u2069"),
        ("\ud800", r"\ud800"),  # a lone surrogate: not text, and unwritable
    ],
)
def test_a_terminal_control_is_shown_as_its_escape(char: str, shown: str) -> None:
    assert visible(f"a{char}b") == f"a{shown}b"


def test_exactly_the_controls_tab_and_newline_aside_are_escaped() -> None:
    """Every code point: escaped when it is a C0 control (but tab, newline), DEL, a C1 control, a bidi embedding,
    override or isolate, or a surrogate; every other character comes out as it went in."""
    bidi = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        controls = unicodedata.category(char) in ("Cc", "Cs") and char not in "\t\n"
        expected = code in bidi or controls
        assert (visible(char) != char) == expected, hex(code)


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII, with (punctuation) & symbols: ~`!@#$%^*_+=|{}[]<>?/",
        "two\nlines\tand a tab",
        "ünïcödé — «quotes» … ½ € ß",
        "漢字かなカナ 한국어",
        "emoji 👍🏽 👨‍👩‍👧 🏳️‍🌈",  # modifiers, zero-width joiners, variation selectors
        "e\u0301 a\u0308 combining marks",
        "שלום עולם مرحبا",  # right-to-left scripts are text, not overrides
        "a literal backslash-x: \\x1b and \\u202e",
        "no-break\u00a0space, soft\u00adhyphen, line\u2028separator",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert visible(text) == text


def test_the_attacks_are_shown_not_obeyed() -> None:
    assert visible("\x1b]0;pwned\x07") == r"\x1b]0;pwned\x07"  # window title
    assert visible("\x1b[2J\x1b[H") == r"\x1b[2J\x1b[H"  # clear screen
    assert visible("\x1b[8msecret\x1b[0m") == r"\x1b[8msecret\x1b[0m"  # hidden text
    link = "\x1b]8;;https://evil.example\x1b\\docs\x1b]8;;\x1b\\"
    assert visible(link) == r"\x1b]8;;https://evil.example\x1b\docs\x1b]8;;\x1b" + "\\"  # OSC 8 hyperlink
    assert visible("rm -rf /\rls -la") == r"rm -rf /\x0dls -la"  # a line overwritten
    assert visible("access = 'user\u202e \u2066// admin\u2069 \u2066'") == (
        r"access = 'user\u202e \u2066// admin\u2069 \u2066'"
    )


def test_log_fields_are_made_visible_too() -> None:
    event = {"event": "retry\x1b[2J", "error": "bad\x9b", "status": 503, "body": {"k": "\x1b"}}
    assert visible_fields(None, "warning", event) == {
        "event": r"retry\x1b[2J",
        "error": r"bad\x9b",
        "status": 503,
        "body": {"k": "\x1b"},  # not a str: the renderer writes it with repr, which escapes it
    }


def test_every_cli_module_writes_through_the_terminal_module() -> None:
    """Read as text: ast.parse can fail mid-suite on CPython 3.11 (python/cpython#106905, see tests/test_layout.py)."""
    modules = sorted(p for p in CLI_DIR.glob("*.py") if p.name != "terminal.py")
    assert modules
    writes = {p.name: DIRECT_WRITE.findall(p.read_text(encoding="utf-8")) for p in modules}
    assert {name: found for name, found in writes.items() if found} == {}


def test_fields_shown_inside_one_line_cannot_start_a_line_of_their_own() -> None:
    """A tool title, a request's question, label or pattern with line breaks stays on its line."""
    forged = "x\n  assistant tool bash [completed] fine\r\n\tstatus: ok"
    tool = {"type": "tool", "tool": "bash", "state": {"status": "running", "title": forged}}
    assert (
        part_line("assistant", tool)
        == "  assistant tool bash [running] x assistant tool bash [completed] fine status: ok"
    )
    question = {"question": forged, "options": [{"label": forged}, {"label": "Blue"}]}
    entry = {"kind": "question", "id": "que_1", "questions": [question]}
    permission = {"kind": "permission", "id": "per_1", "permission": "bash", "patterns": [forged]}
    lines = request_lines("ses_1", entry) + request_lines("ses_1", permission)
    assert len(lines) == 5 and not any("\n" in line or "\r" in line for line in lines)
    assert lines[1] == f"            1. {one_line(forged)} [{one_line(forged)} | Blue]"
    answered = answered_lines(
        [{"kind": "question", "id": "que_1", "answer": {"answers": [[forged]]}, "answeredBy": forged}]
    )
    assert answered == [f"  request   question que_1 (question): {one_line(forged)} by {one_line(forged)} [unanswered]"]
