"""Applies sql/*.sql in order under an advisory lock, recording what it applied.

Safe to run twice (applied files are skipped) and from many replicas at once (the lock serialises them).
A file whose first line is `-- migrate: every-run` is idempotent and re-applied on every run.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog

from shared.errors import ConfigError

log = structlog.get_logger(__name__)

MIGRATE_LOCK_ID = 0x6F70656E636F6465  # "opencode": one lock for every replica of every process
EVERY_RUN_MARKER = "-- migrate: every-run"


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def every_run(self) -> bool:
        return self.sql.startswith(EVERY_RUN_MARKER)


def sql_dir() -> Path:
    """The source checkout's sql/ (editable installs, the image), else the wheel's data-files copy."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "sql",
        Path(sys.prefix) / "share" / "opencode-session-layer" / "sql",
    ):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise ConfigError("cannot find the sql/ migrations next to the package or under sys.prefix/share")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    folder = directory or sql_dir()
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.sql"))]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one run did: `applied` the files the schema was behind on (new, or changed since they were applied),
    `reapplied` the every-run files it ran again although they were applied before."""

    applied: list[str]
    reapplied: list[str]


async def migrate(conn: psycopg.AsyncConnection[Any], migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is new; returns the names applied by this call (every-run files included)."""
    report = await migrate_report(conn, migrations)
    ran = set(report.applied) | set(report.reapplied)
    return [m.name for m in (migrations if migrations is not None else load_migrations()) if m.name in ran]


async def migrate_report(
    conn: psycopg.AsyncConnection[Any], migrations: list[Migration] | None = None
) -> MigrationReport:
    """Apply what is new and re-run the every-run files; say which were behind and which were only re-run."""
    todo = migrations if migrations is not None else load_migrations()
    report = MigrationReport([], [])
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_ID,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS opencode_schema_migrations ("
            " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name, checksum FROM opencode_schema_migrations")
        done = {str(name): str(checksum) for name, checksum in await cur.fetchall()}
        for migration in todo:
            if migration.name in done and not migration.every_run:
                if done[migration.name] != migration.checksum:
                    log.warning("migration_changed_after_apply", migration=migration.name)
                continue
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO opencode_schema_migrations (name, checksum) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
                    (migration.name, migration.checksum),
                )
            behind = done.get(migration.name) != migration.checksum
            (report.applied if behind else report.reapplied).append(migration.name)
            log.info("migration_applied", migration=migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_ID,))
    return report
