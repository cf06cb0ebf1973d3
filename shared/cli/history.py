"""`opencode-sessions history`: a ticket's archived sessions from PostgreSQL, newest first, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from shared.cli.runtime import clients, run
from shared.cli.terminal import echo, emit_json, one_line
from shared.cli.usage import cost_text, tokens_text
from shared.config import Settings
from shared.errors import InvalidInput
from shared.ids import parse_ticket_id
from shared.models import SESSION_TYPES
from shared.opencode.servers import OpenCodeServers, parse_directory
from shared.sessions import archived_sessions, decode_cursor

MAX_LIMIT = 100
TITLE_WIDTH = 50


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(session: dict[str, Any]) -> str:
    started, completed = session.get("startedAt"), session.get("completedAt")
    if started is None or completed is None:
        return "-"
    seconds = max(0, completed - started) / 1000
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _summary(session: dict[str, Any]) -> str:
    text = one_line(session.get("error") or session.get("title") or "")
    return text if len(text) <= TITLE_WIDTH else text[: TITLE_WIDTH - 1] + "…"


def _cursor(cursor: str) -> None:
    """A cursor a page printed; the error names --before, as every argument's does."""
    try:
        decode_cursor(cursor)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message} for --before: give the cursor a page printed (more: --before …)") from None


@click.command()
@click.option("--ticket", "ticket_id", metavar="ID", help="Only this ticket's sessions (without it: every ticket's).")
@click.option("--type", "session_type", type=click.Choice(SESSION_TYPES), help="Only sessions of this kind.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, MAX_LIMIT), help="Sessions per page.")
@click.option("--before", "cursor", metavar="CURSOR", help="Continue after a page: the cursor it printed.")
@click.option("--server", metavar="NAME", help="Only sessions on this OpenCode server.")
@click.option("--directory", metavar="PATH", help="Only sessions run in this directory.")
@click.option("--json", "as_json", is_flag=True, help="Print {sessions, nextCursor} as JSON.")
def history(
    ticket_id: str | None,
    session_type: str | None,
    limit: int,
    cursor: str | None,
    server: str | None,
    directory: str | None,
    as_json: bool,
) -> None:
    """List archived (ended) sessions newest first from PostgreSQL (DATABASE_URL).

    The table shows id, type, status, start time (UTC), duration, message count, tokens (input / output), cost
    and the title or error;
    when there are more, the last line gives the --before cursor of the next page.
    """
    # Bad input is exit 2 before connecting to anything.
    if ticket_id is not None:
        parse_ticket_id(ticket_id)
    if cursor is not None:
        _cursor(cursor)
    directory = parse_directory(directory)  # its one spelling, as sessions are recorded (was: as typed)
    if server is not None:
        OpenCodeServers(Settings.from_env().servers).config(server)  # exit 2 naming an unknown one

    async def go() -> dict[str, Any]:
        async with clients() as c:
            return await archived_sessions(
                c.db,
                ticket_id=ticket_id,
                session_type=session_type,
                limit=limit,
                before=cursor,
                server=server,
                directory=directory,
            )

    page = run(go)
    if as_json:
        emit_json(page)
        return
    sessions = page["sessions"]
    if not sessions:
        echo("no archived sessions" + (f" for ticket {ticket_id}" if ticket_id else ""))
        return
    rows = [
        (
            one_line(s["sessionId"]),  # a row another backend wrote may hold any text: one line each, still
            one_line(s["sessionType"]),
            one_line(s["status"]),
            _when(s.get("startedAt")),
            _duration(s),
            str(s.get("messageCount", 0)),
            tokens_text(s.get("usage")),
            cost_text(s.get("usage")),
            _summary(s),
        )
        for s in sessions
    ]
    header = ("SESSION", "TYPE", "STATUS", "STARTED (UTC)", "TOOK", "MSGS", "TOKENS", "COST", "TITLE / ERROR")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        echo("  ".join([*cells, row[-1]]).rstrip())
    if page["nextCursor"]:
        echo(f"more: --before {page['nextCursor']}")
