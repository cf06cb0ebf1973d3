"""A PostgreSQL child on a loopback port, its database created on start (TCP only; trust or password auth)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shared.dev.embedded.postgres_install import find_postgres_bindir, postgres_user, usable_bindir
from shared.dev.embedded.server import EmbeddedServerError, Server, run_helper, spawn, started, tail
from shared.dev.processes import LOOPBACK

_PG_SUPERUSER = "postgres"
_SEVERITY = re.compile(r"\b(?:FATAL|PANIC|ERROR|error):\s+")
_AFTERMATH = ("child process exited with", "initdb: removing", "initdb: data directory", "initdb: hint:")
_PERMISSIONS = ("permission denied", "operation not permitted", "could not change directory", "must be owned")


def initdb_reason(output: str) -> str:
    """The line of initdb's output that says why it failed: its last error, not the clean-up that follows it."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    meaningful = [line for line in lines if not any(noise in line for noise in _AFTERMATH)]
    for line in reversed(meaningful):
        found = _SEVERITY.search(line)
        if found is not None:
            return line[found.start() :]
    return meaningful[-1] if meaningful else "(no output)"


def _about_permissions(output: str) -> bool:
    return any(marker in output.lower() for marker in _PERMISSIONS)


class PostgresServer(Server):
    """A PostgreSQL child on a loopback port with trust auth for user ``postgres``; its database is created on start.

    The cluster lives in ``data_dir/pgdata`` and is initialised only when empty; a temporary one trades durability
    for speed (fsync off; `durable` overrides). With a `password` the cluster is initialised with password
    (SCRAM) authentication for every connection, that password being the superuser's; without, it trusts them.
    """

    _kind = "PostgreSQL"
    _log_name = "postgres.log"
    _stop_signal = signal.SIGINT  # "fast" shutdown: disconnects clients instead of waiting for them
    _death_signal = signal.SIGINT  # also when we die: a leftover client must not keep it alive

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        database: str = "opencode",
        port: int | None = None,
        password: str | None = None,
        durable: bool | None = None,
    ) -> None:
        super().__init__(data_dir, port, "opencode-pg-")
        self.database = database
        self.password = password
        self.durable = not self._owns_dir if durable is None else durable
        self._user = postgres_user()
        if self._owns_dir and self._user is not None:
            os.chown(self.data_dir, self._user.uid, self._user.gid)  # mkdtemp made it 0700 and ours

    @property
    def url(self) -> str:
        login = _PG_SUPERUSER if self.password is None else f"{_PG_SUPERUSER}:{quote(self.password, safe='')}"
        return f"postgresql://{login}@{LOOPBACK}:{self.port}/{quote(self.database, safe='')}"

    def role_url(self, role: str, password: str) -> str:
        """The URL that logs in as another role of the cluster."""
        login = f"{quote(role, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{login}@{LOOPBACK}:{self.port}/{quote(self.database, safe='')}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _failure_hint(self) -> str:
        if self._user is None:
            return ""
        return (
            f" (running as user {self._user.name!r} because PostgreSQL refuses root:"
            f" every directory above {self.pgdata} must be searchable by that user)"
        )

    def _launch(self) -> subprocess.Popen[bytes]:
        bindir = usable_bindir(find_postgres_bindir(), self._user)
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(bindir)
        argv = [
            str(bindir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", "unix_socket_directories=",  # TCP only: no socket dir to own, no path-length limit
        ]  # fmt: skip
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return spawn(argv, log=self.log_path, cwd=self.pgdata, death_signal=self._death_signal, user=self._user)

    def _initdb(self, bindir: Path) -> None:
        if not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(self.pgdata, self._user.uid, self._user.gid)
        argv = [
            str(bindir / "initdb"),
            "-D", str(self.pgdata),
            "-U", _PG_SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
        ]  # fmt: skip
        if self.password is None:
            argv.append("--auth=trust")
        else:  # the password reaches initdb in a file only the server's user can read, never on the command line
            pwfile = self.data_dir / "superuser-password"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.password + "\n")
            if self._user is not None:
                os.chown(pwfile, self._user.uid, self._user.gid)
            argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        if not self.durable:
            argv.append("--no-sync")
        try:
            code, output = run_helper(
                argv, cwd=self.pgdata, user=self._user, timeout=120, env={**os.environ, "LC_ALL": "C", "TZ": "UTC"}
            )
        finally:
            if self.password is not None:
                (self.data_dir / "superuser-password").unlink(missing_ok=True)
        if code != 0:
            raise EmbeddedServerError(self._initdb_failure(code, output) + "\n" + tail(output))

    def _initdb_failure(self, code: int, output: str) -> str:
        """One line: initdb's own reason, the hint about the server's user only when the output is about
        permissions, and where the whole output was kept (DIR/postgres/initdb.log)."""
        kept = self.data_dir / "initdb.log"
        try:
            kept.write_text(output, encoding="utf-8")
            where = f" (its output: {kept})"
        except OSError:  # a full disk, often the very reason initdb failed
            where = ""
        hint = self._failure_hint() if _about_permissions(output) else ""
        return f"initdb of {self.pgdata} failed with code {code}: {initdb_reason(output)}{hint}{where}"

    def _connect(self, dbname: str, timeout: int) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=_PG_SUPERUSER,
            password=self.password,
            dbname=dbname,
            connect_timeout=timeout,
            autocommit=True,
        )

    def _ready(self) -> bool:
        try:
            with self._connect("postgres", 2) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError:  # also "the database system is starting up"
            return False
        if row is None or Path(row[0]).resolve() != self.pgdata.resolve():
            raise self._foreign(f"data_directory {row[0] if row else '?'}")
        return True

    def _after_ready(self) -> None:
        with self._connect("postgres", 10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))


def start_postgres(
    data_dir: Path | None = None,
    *,
    database: str = "opencode",
    port: int | None = None,
    password: str | None = None,
    durable: bool | None = None,
) -> PostgresServer:
    """Start PostgreSQL with `database` created and return it running; close() it (or use `with`) when done."""
    return started(PostgresServer(data_dir, database=database, port=port, password=password, durable=durable))
