"""Applies sql/*.sql in order under an advisory lock, recording what it applied.

Safe to run twice (applied files are skipped) and from many replicas at once (the lock serialises them).
A file's leading `-- migrate: …` lines say how it is run:
- `every-run`: the file is idempotent and re-applied on every run;
- `no-transaction`: the file is one statement, run on its own outside a transaction (CREATE INDEX CONCURRENTLY,
  which cannot run in one and does not block writes while it builds; a DO block that commits part-way). A
  concurrent build cut short leaves an INVALID index that IF NOT EXISTS would keep for ever: such an index of the
  file's is dropped before it runs;
- `replaces SHA256`: a database that recorded that checksum (an earlier text of this file, with the same effect)
  has what the file makes: its record is updated to the new text, nothing is run.
A file waits at most lock_timeout_ms for each lock (a long transaction holding one would otherwise queue every
writer of the table behind the migration), then rolls back and tries again, lock_attempts times; a concurrent
index build alone waits as long as it must (it blocks no writer meanwhile).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
import structlog
from psycopg import sql

from shared.backoff import Backoff
from shared.errors import ConfigError, SessionLayerError

log = structlog.get_logger(__name__)

DISTRIBUTION = "opencode-session-layer"
MIGRATE_LOCK_ID = 0x6F70656E636F6465  # "opencode": one lock for every replica of every process
DIRECTIVE = "-- migrate: "  # a file's leading lines: `-- migrate: every-run`, `no-transaction`, `replaces SHA256`
LOCK_TIMEOUT_MS = 3000  # the longest a migration may hold the table's writers queued behind its lock request
LOCK_ATTEMPTS = 10  # at most about 2.5 minutes of tries in all, well inside the migrate Job's deadline
LOCK_RETRY_BASE_S, LOCK_RETRY_CAP_S = 0.5, 30.0  # the pause between tries: doubling, jittered, capped
REPLACES = re.compile(r"replaces [0-9a-f]{64}")
CONCURRENT_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_$]*)", re.I
)


class MigrationFailed(SessionLayerError):
    """A migration PostgreSQL refused (or could not lock in time): nothing of it was recorded (exit 1)."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def directives(self) -> list[str]:
        """The file's leading `-- migrate: …` lines, without the prefix."""
        lines = []
        for line in self.sql.splitlines():
            if not line.startswith(DIRECTIVE):
                break
            lines.append(line.removeprefix(DIRECTIVE).strip())
        return lines

    @property
    def every_run(self) -> bool:
        return "every-run" in self.directives

    @property
    def no_transaction(self) -> bool:
        return "no-transaction" in self.directives

    @property
    def replaces(self) -> frozenset[str]:
        """Checksums of earlier texts of this file that did what it does."""
        return frozenset(d.split()[1] for d in self.directives if REPLACES.fullmatch(d))

    @property
    def unknown_directives(self) -> list[str]:
        """Directives misspelt (a file silently run in a transaction, or only once, would be worse than none)."""
        return [d for d in self.directives if d not in ("every-run", "no-transaction") and not REPLACES.fullmatch(d)]

    @property
    def concurrent_indexes(self) -> list[str]:
        """Names of the indexes the file builds CONCURRENTLY (comments aside)."""
        return CONCURRENT_INDEX.findall(re.sub(r"--[^\n]*", "", self.sql))


def sql_dir() -> Path:
    """The source checkout's sql/ (editable installs), else where the wheel's data-files were installed."""
    for candidate in sql_dir_candidates(Path(__file__).resolve().parents[2], Path(sys.prefix)):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise ConfigError("cannot find the sql/ migrations next to the package or where its wheel installed them")


def sql_dir_candidates(site: Path, prefix: Path) -> list[Path]:
    """Where sql/ may be, given the directory holding the `shared` package: a checkout's sql/; the data-files as the
    installer recorded them beside the package (a --user or --prefix install is not under sys.prefix); a --target
    install's share/; sys.prefix/share (a virtualenv, the image)."""
    recorded = [
        Path(str(dist.locate_file(f))).resolve().parent
        for dist in importlib.metadata.distributions(path=[str(site)])
        if dist.metadata["Name"] == DISTRIBUTION
        for f in dist.files or []
        if f.match(f"{DISTRIBUTION}/sql/*.sql")
    ]
    return [
        site / "sql",
        *dict.fromkeys(recorded),
        site / "share" / DISTRIBUTION / "sql",
        prefix / "share" / DISTRIBUTION / "sql",
    ]


def load_migrations(directory: Path | None = None) -> list[Migration]:
    folder = directory or sql_dir()
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.sql"))]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one run did: `applied` the files the schema was behind on (new ones, and every-run files changed since
    they last ran), `reapplied` the every-run files it ran again although they were applied before."""

    applied: list[str]
    reapplied: list[str]


async def migrate(conn: psycopg.AsyncConnection[Any], migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is new; returns the names applied by this call (every-run files included)."""
    report = await migrate_report(conn, migrations)
    ran = set(report.applied) | set(report.reapplied)
    return [m.name for m in (migrations if migrations is not None else load_migrations()) if m.name in ran]


async def migrate_report(
    conn: psycopg.AsyncConnection[Any],
    migrations: list[Migration] | None = None,
    *,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    lock_attempts: int = LOCK_ATTEMPTS,
) -> MigrationReport:
    """Apply what is new and re-run the every-run files; say which were behind and which were only re-run."""
    todo = migrations if migrations is not None else load_migrations()
    for migration in todo:
        if migration.unknown_directives:
            raise MigrationFailed(
                f"migration {migration.name}: unknown `-- migrate: {migration.unknown_directives[0]}`"
            )
    report = MigrationReport([], [])
    await conn.set_autocommit(True)
    await _take_lock(conn)
    try:
        await _refused_as_failure(conn, "cannot create opencode_schema_migrations", _create_record_table(conn))
        cur = await conn.execute("SELECT name, checksum FROM opencode_schema_migrations")
        done = {str(name): str(checksum) for name, checksum in await cur.fetchall()}
        for migration in todo:
            recorded = done.get(migration.name)
            if recorded is not None and not migration.every_run:
                if recorded in migration.replaces:
                    await _record(conn, migration)
                    log.info("migration_record_updated", migration=migration.name)
                elif recorded != migration.checksum:
                    log.warning("migration_changed_after_apply", migration=migration.name)
                continue
            await _refused_as_failure(
                conn, f"migration {migration.name} failed", _apply(conn, migration, lock_timeout_ms, lock_attempts)
            )
            (report.applied if recorded != migration.checksum else report.reapplied).append(migration.name)
            log.info("migration_applied", migration=migration.name)
    finally:
        if not conn.broken:  # a lost connection released the lock with its session
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_ID,))
    return report


async def _take_lock(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wait for the migrate lock between statements, not inside one: a replica blocked in pg_advisory_lock() holds a
    snapshot, which the holder's CREATE INDEX CONCURRENTLY waits to see end: a deadlock PostgreSQL breaks by
    failing one of them."""
    backoff = Backoff(base_s=0.05, cap_s=1.0)
    while True:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK_ID,))
        if (await cur.fetchone()) == (True,):
            return
        if backoff.failures == 0:  # a warning, so that the CLI shows why it waits
            cur = await conn.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND l.locktype = 'advisory' AND l.granted"
                " AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1",
                (MIGRATE_LOCK_ID >> 32, MIGRATE_LOCK_ID & 0xFFFFFFFF),
            )
            holder = await cur.fetchone()
            log.warning("migration_lock_wait", holder_pid=holder[0] if holder else None)
        await anyio.sleep(backoff.failed(anyio.current_time()))


async def _create_record_table(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS opencode_schema_migrations ("
        " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def _refused_as_failure(conn: psycopg.AsyncConnection[Any], what: str, step: Awaitable[None]) -> None:
    """PostgreSQL's refusal of one step as MigrationFailed naming it; a lost connection stays an outage."""
    try:
        await step
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise MigrationFailed(f"{what}: {first}") from exc


async def _apply(conn: psycopg.AsyncConnection[Any], migration: Migration, lock_timeout_ms: int, attempts: int) -> None:
    """Run the file, waiting lock_timeout_ms at most per lock and trying again; a concurrent index build waits as long
    as it must instead (for the transactions open when it started, which it does not block)."""
    timeout = "0" if migration.concurrent_indexes else f"{lock_timeout_ms}ms"
    backoff = Backoff(base_s=LOCK_RETRY_BASE_S, cap_s=LOCK_RETRY_CAP_S)
    for attempt in range(1, attempts + 1):
        try:
            if migration.no_transaction:
                await _drop_invalid_indexes(conn, migration)
                await conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
                try:
                    await conn.execute(migration.sql.encode())
                finally:
                    if not conn.broken:
                        await conn.execute("RESET lock_timeout")
                await _record(conn, migration)
            else:
                async with conn.transaction():
                    await conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                    await conn.execute(migration.sql.encode())
                    await _record(conn, migration)
            return
        except psycopg.errors.LockNotAvailable as exc:
            if attempt == attempts:
                raise MigrationFailed(
                    f"migration {migration.name} failed: it waited {attempts} times {lock_timeout_ms} ms for a lock"
                    " that a long transaction holds (see pg_stat_activity); run migrate again once it has ended"
                ) from exc
            log.warning("migration_lock_timeout", migration=migration.name, attempt=attempt)
            await anyio.sleep(backoff.failed(anyio.current_time()))


async def _record(conn: psycopg.AsyncConnection[Any], migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO opencode_schema_migrations (name, checksum) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
        (migration.name, migration.checksum),
    )


async def _drop_invalid_indexes(conn: psycopg.AsyncConnection[Any], migration: Migration) -> None:
    """A concurrent build that failed or was cut short leaves its index INVALID (unused, yet maintained on every
    write): drop it so the file builds it again, rather than IF NOT EXISTS keeping it for ever."""
    for name in migration.concurrent_indexes:
        cur = await conn.execute(
            "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass(%s) AND NOT i.indisvalid",
            (name,),
        )
        row = await cur.fetchone()
        if row is not None:
            log.warning("migration_invalid_index_dropped", migration=migration.name, index=name)
            await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(*row)))
