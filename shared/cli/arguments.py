"""The one validation path for what a user hands the CLI: every argument and option, standard input, files.

Each bad value is an InvalidInput naming the argument (exit 2), found before any server is contacted. The CLI
is our own input, so a NUL character (U+0000) is refused here; the Python API stores it faithfully.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click
from click.core import ParameterSource

from shared.errors import InvalidInput
from shared.ids import LONE_SURROGATE

ENVIRONMENT = ParameterSource.ENVIRONMENT
MAX_ARGUMENT_CHARS = 1_000_000  # the longest prompt (shared.commands.MAX_PROMPT_CHARS)
MAX_INPUT_BYTES = 8 * 1024 * 1024  # standard input or a file: a prompt of MAX_ARGUMENT_CHARS in any script fits


def check_text(value: str, what: str, max_chars: int = MAX_ARGUMENT_CHARS) -> str:
    """`value` unchanged, or InvalidInput naming `what`: bytes that were not UTF-8 (Python keeps them as lone
    surrogates), a NUL character, or more than `max_chars` characters."""
    if LONE_SURROGATE.search(value):  # how Python keeps argument bytes that were not UTF-8
        raise InvalidInput(f"{what} is not valid UTF-8")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character (U+0000), which the CLI does not accept")
    if len(value) > max_chars:
        raise InvalidInput(f"{what} is longer than {max_chars} characters")
    return value


def _decode(data: bytes, what: str) -> str:
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_INPUT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}") from None
    return check_text(text, what)


def _read_all(stream: BinaryIO) -> bytes:
    return stream.read(MAX_INPUT_BYTES + 1)  # one byte past the limit tells that it is too large


def read_stdin(what: str) -> str:
    """Standard input as text, checked like an argument."""
    return _decode(_read_all(sys.stdin.buffer), f"{what} (standard input)")


def read_value(value: str, what: str) -> str:
    """`value` itself, or what it names: `-` standard input, `@PATH` a file."""
    if value == "-":
        return read_stdin(what)
    if value.startswith("@"):
        path = value[1:]
        if not path:  # Was: Path("") is the current directory: "cannot read … from '': Is a directory"
            raise InvalidInput(f"{what} @ names no file: give @PATH")
        try:
            with Path(path).open("rb") as file:
                data = _read_all(file)
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} from {path!r}: {exc.strerror or exc}") from None
        return _decode(data, f"{what} ({path!r})")
    return value


def _name(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    return (param.name or "argument").upper()


def _variable(param: click.Parameter) -> str:
    """` (from GATEWAY_URL)` when the variable gave the option its value: the one to fix. Was: the option alone."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not param.name or ctx.get_parameter_source(param.name) is not ENVIRONMENT:
        return ""
    return f" (from {param.envvar})" if isinstance(param.envvar, str) else ""


def _check_param(param: click.Parameter, value: object) -> None:
    try:
        _check_values(param, value)
    except InvalidInput as exc:
        raise InvalidInput(exc.message + _variable(param)) from None


def _check_values(param: click.Parameter, value: object) -> None:
    values = value if isinstance(value, (tuple, list)) else (value,)
    for item in values:
        if isinstance(item, str):
            check_text(item, _name(param))
        elif isinstance(item, float) and math.isnan(item):  # click's FloatRange lets it by: no comparison fails
            raise InvalidInput(f"{_name(param)} must be a number, not {item}")


def checked(command: click.Command) -> click.Command:
    """The command, its callback first checking every text value it was given (arguments, options, their
    environment variables) with check_text."""
    callback = command.callback
    if callback is None:
        return command
    by_name = {param.name: param for param in command.params if param.name}

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        for name, value in kwargs.items():
            if name in by_name:
                _check_param(by_name[name], value)
        return callback(*args, **kwargs)

    command.callback = run
    return command
