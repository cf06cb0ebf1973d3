"""`opencode-sessions`: the click group, and the one place errors become a line on stderr and an exit code.

Exit codes: 0 success, 1 the operation failed (unreachable server, unknown session, conflict),
2 bad usage or input (click's own usage errors, invalid ids, bad JSON, bad configuration).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, NoReturn

import click
import structlog

from shared.cli.arguments import checked
from shared.cli.terminal import echo, one_line, visible_fields
from shared.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    OpenCodeError,
    SessionLayerError,
    Unauthorized,
    Unavailable,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CODES: dict[type[SessionLayerError], int] = {
    InvalidInput: EXIT_USAGE,
    NotFound: EXIT_FAILED,
    Conflict: EXIT_FAILED,
    Unavailable: EXIT_FAILED,
    OpenCodeError: EXIT_FAILED,
    Unauthorized: EXIT_FAILED,
    Forbidden: EXIT_FAILED,
}


def exit_code_for(exc: SessionLayerError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_FAILED


def fail(exc: SessionLayerError) -> NoReturn:
    if _timed_out(exc.__cause__):
        _error(_timed_out_message(exc.__cause__), exit_code_for(exc))
    _error(exc.message, exit_code_for(exc))


def _error(message: str, code: int) -> NoReturn:
    echo(f"error: {one_line(message)}", err=True)  # one line, whatever the cause said
    sys.exit(code)


# Each command's module, imported when that command runs (or `--help` lists them all): `token` or a usage error
# then answers without loading the Redis, PostgreSQL and HTTP clients that other commands use.
COMMANDS = {
    "answer": "shared.cli.requests",
    "cancel": "shared.cli.sessions",
    "dev": "shared.cli.dev",
    "enqueue": "shared.cli.sessions",
    "history": "shared.cli.history",
    "migrate": "shared.cli.ops",
    "reply": "shared.cli.requests",
    "send": "shared.cli.sessions",
    "show": "shared.cli.sessions",
    "status": "shared.cli.status",
    "token": "shared.cli.tokens",
    "usage": "shared.cli.usage",
    "watch": "shared.cli.watch",
}


class Group(click.Group):
    """Runs every command inside the error mapping, so no traceback ever reaches the user, each with its
    arguments checked first (shared.cli.arguments); loads a command's module on first use (COMMANDS)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(checked(cmd), name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(getattr(importlib.import_module(COMMANDS[cmd_name]), cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SessionLayerError as exc:
            fail(exc)
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # main() reports these
        except Exception as exc:
            if _timed_out(exc):
                _error(_timed_out_message(exc), EXIT_FAILED)
            if _no_table(exc):
                _error("PostgreSQL has no opencode_sessions table: run `opencode-sessions migrate` first", EXIT_FAILED)
            text = str(exc).strip().splitlines()
            _error(f"unexpected {type(exc).__name__}: {text[0] if text else ''}", EXIT_FAILED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="opencode-session-layer")
def cli() -> None:
    """Queue, follow and operate OpenCode sessions (live in Redis, archived in PostgreSQL)."""


def _no_table(exc: Exception) -> bool:
    """PostgreSQL's "relation does not exist", asked without importing psycopg: a command that never loaded it
    cannot have raised one."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.errors.UndefinedTable)


def _timed_out(exc: BaseException | None) -> bool:
    """A statement PostgreSQL cancelled at its statement_timeout (shared.cli.runtime bounds each one): no
    unreachable PostgreSQL, as store_errors words every OperationalError."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.errors.QueryCanceled)


def _timed_out_message(exc: BaseException | None) -> str:
    reason = (str(exc).strip().splitlines() or ["statement timeout"])[0]  # not its CONTEXT lines
    return f"PostgreSQL did not finish in time ({reason}): a transaction left open may hold a lock this command needs"


def _reader_went_away() -> NoReturn:
    """`show … | head`: the reader closed the pipe. Nothing to report on stderr; exit 1 as click does for a pipe
    that breaks inside a command, and point stdout at /dev/null so the interpreter's last flush cannot raise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_FAILED)


def main() -> None:
    # stdout is the command's output (a session id, JSON): logs go to stderr, and only warnings.
    structlog.configure(
        processors=[  # structlog's default chain, with the text made visible before it is rendered
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            visible_fields,
            structlog.dev.ConsoleRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    try:
        result = cli.main(prog_name="opencode-sessions", standalone_mode=False)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
    except BrokenPipeError:
        _reader_went_away()
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # bare `opencode-sessions`: the help text
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: one `error:` line too, not click's three
        _error(exc.format_message(), exc.exit_code)
    except click.Abort:
        echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)  # --help / --version come back as their exit code
