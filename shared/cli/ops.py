"""Operator commands: migrate."""

from __future__ import annotations

import click

from shared.cli.runtime import run
from shared.cli.terminal import echo, emit_json
from shared.config import Settings
from shared.store.connections import pg_connect, store_errors
from shared.store.migrate import MigrationReport, migrate_report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def migrate(as_json: bool) -> None:
    """Apply sql/*.sql to DATABASE_URL in order; safe to run twice and from several replicas at once.

    Prints `up to date` when the schema was not behind, else `applied: <files>`. "Applied" means the files the
    schema was behind on (new ones, and every-run files changed since they last ran). Files marked every-run
    (002_ticket_fk.sql) are also run each time but are not "applied" then; --json lists them under `reapplied`:
    {"applied": [...], "reapplied": [...], "upToDate": <applied is empty>}. A file that fails, or waits too long
    for a lock a long transaction holds, is rolled back: exit 1 with one line naming it.
    """

    async def go() -> MigrationReport:
        settings = Settings.from_env()
        conn = await pg_connect(settings.database_url)
        try:
            with store_errors("PostgreSQL"):
                return await migrate_report(conn)
        finally:
            await conn.close()

    report = run(go)
    if as_json:
        emit_json({"applied": report.applied, "reapplied": report.reapplied, "upToDate": not report.applied})
    else:
        echo(f"applied: {', '.join(report.applied)}" if report.applied else "up to date")
