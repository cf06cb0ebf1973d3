"""`opencode-sessions usage`: what sessions used (tokens by kind, cost, model steps), and how `history` and
`show` print one session's usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from shared.cli.runtime import clients, run
from shared.cli.terminal import echo, emit_json
from shared.config import Settings
from shared.errors import InvalidInput
from shared.ids import TicketId, parse_ticket_id
from shared.models import SESSION_TYPES
from shared.opencode.servers import OpenCodeServers
from shared.store.usage_sums import UsageFilter
from shared.usage import Usage
from shared.usage_report import usage_totals


def tokens_text(usage: Any) -> str:
    """`1,200 in / 300 out`: the history table's column."""
    u = Usage.from_json(usage)
    return f"{u.input:,} in / {u.output:,} out"


def cost_text(usage: Any) -> str:
    return f"{Usage.from_json(usage).cost:.4f}"


def usage_line(usage: Any) -> str:
    """One line: steps, tokens by kind, cost."""
    u = Usage.from_json(usage)
    return (
        f"usage: {u.steps} steps, tokens {u.input:,} input / {u.output:,} output / {u.reasoning:,} reasoning"
        f" / {u.cache_read:,} cache read / {u.cache_write:,} cache write, cost {u.cost:.4f}"
    )


def parse_since(raw: str) -> datetime:
    """A date or an ISO date-time; without a zone it is UTC. InvalidInput (exit 2) for anything else."""
    try:
        when = datetime.fromisoformat(raw)
        if when.tzinfo is not None:  # a zone's offset can carry it past the years a datetime holds: OverflowError
            when = when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"--since {raw!r} is not a date (YYYY-MM-DD or an ISO date-time)") from None
    return when.replace(tzinfo=None)


@click.command()
@click.option("--ticket", "ticket_id", metavar="ID", help="Only this ticket's sessions.")
@click.option("--type", "session_type", type=click.Choice(SESSION_TYPES), help="Only sessions of this kind.")
@click.option("--server", metavar="NAME", help="Only sessions on this OpenCode server.")
@click.option("--since", metavar="DATE", help="Only sessions started at or after this (YYYY-MM-DD or ISO, UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print {sessions, usage} as JSON.")
def usage(
    ticket_id: str | None, session_type: str | None, server: str | None, since: str | None, as_json: bool
) -> None:
    """Print what sessions used together: tokens by kind, cost and model steps.

    Ended sessions are summed in PostgreSQL (DATABASE_URL); running ones count with their live usage (REDIS_URL).
    """
    where = UsageFilter(
        ticket_id=TicketId(parse_ticket_id(ticket_id)) if ticket_id is not None else None,
        session_type=session_type,
        since=parse_since(since) if since is not None else None,
        server=OpenCodeServers(Settings.from_env().servers).config(server).name if server is not None else None,
    )

    async def go() -> dict[str, Any]:
        async with clients() as c:
            return await usage_totals(c.redis, c.db, where)

    totals = run(go)
    if as_json:
        emit_json(totals)
        return
    u = Usage.from_json(totals["usage"])
    for label, value in (
        ("sessions", f"{totals['sessions']:,}"),
        ("steps", f"{u.steps:,}"),
        ("input tokens", f"{u.input:,}"),
        ("output tokens", f"{u.output:,}"),
        ("reasoning tokens", f"{u.reasoning:,}"),
        ("cache read tokens", f"{u.cache_read:,}"),
        ("cache write tokens", f"{u.cache_write:,}"),
        ("cost", f"{u.cost:.4f}"),
    ):
        echo(f"{label:19}{value}")
