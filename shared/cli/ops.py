"""Operator commands: migrate."""

from __future__ import annotations

import click

from shared.cli.runtime import emit_json, run
from shared.config import Settings
from shared.store.connections import pg_connect, store_errors
from shared.store.migrate import load_migrations
from shared.store.migrate import migrate as apply_migrations


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
    # Every-run files are re-applied each time; only the others say whether the schema was behind.
    every_run = {m.name for m in load_migrations() if m.every_run}
    up_to_date = all(name in every_run for name in applied)
    if as_json:
        emit_json({"applied": applied, "upToDate": up_to_date})
    else:
        click.echo("up to date" if up_to_date else f"applied: {', '.join(applied)}")


def add_commands(group: click.Group) -> None:
    group.add_command(migrate)
