"""Operator commands: migrate."""

from __future__ import annotations

import click

from shared.cli.runtime import emit_json, run
from shared.config import Settings
from shared.connections import pg_connect, store_errors
from shared.migrate import migrate as apply_migrations


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def migrate(as_json: bool) -> None:
    """Apply sql/*.sql to DATABASE_URL in order; safe to run twice and from several replicas at once."""

    async def go() -> list[str]:
        settings = Settings.from_env()
        conn = await pg_connect(settings.database_url)
        try:
            with store_errors("PostgreSQL"):
                return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = run(go)
    if as_json:
        emit_json({"applied": applied})
    else:
        click.echo(f"applied: {', '.join(applied)}" if applied else "up to date")


def add_commands(group: click.Group) -> None:
    group.add_command(migrate)
