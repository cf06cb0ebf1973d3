"""`opencode-sessions dev` run as a user runs it, for the tests: a fresh environment, a background process whose
stdout lines are read as they come, the processes it started, and the other CLI commands run against it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import ARTIFACTS

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]
SERVICE_VARIABLES = ("REDIS_URL", "DATABASE_URL", "OPENCODE_URL", "GATEWAY_URL", "GATEWAY_TOKEN")
START_TIMEOUT_S = 120
EXPORTED = ("GATEWAY_URL", "REDIS_URL", "DATABASE_URL", "OPENCODE_URL", "GATEWAY_AUTH_SECRET")
# shared.dev.embedded may keep a copy of PostgreSQL's binaries in the temp dir (root runs it as another user): a cache
# shared by every run, not data of this one.
PERSISTENT_CACHE = "opencode-embedded-pg-"


def fresh_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES and not k.startswith("GATEWAY_")}
    env |= {"TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"}
    return env


@contextlib.contextmanager
def world_traversable_dir(prefix: str) -> Iterator[Path]:
    """Under the system temp dir, not pytest's 0700 one: PostgreSQL runs as `nobody` when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Dev:
    """`opencode-sessions dev …` in the background: stdout lines on a queue, stderr in an artifact file."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"dev-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*CLI, "dev", *args], env=env, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"dev printed nothing in time; stderr:\n{self.stderr()[-3000:]}") from None
        if line is None:
            raise AssertionError(f"dev exited ({self.proc.wait()}); stderr:\n{self.stderr()[-3000:]}")
        return line

    def environment(self, extra: tuple[str, ...] = ()) -> dict[str, str]:
        """The `export KEY=VALUE` lines printed once everything is up (EXPORTED, and `extra` ones)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        found: dict[str, str] = {}
        while len(found) < len(EXPORTED) + len(extra):
            line = self.next_line(deadline)
            assert line.startswith("export "), line
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = shlex.split(value)[0]
        assert sorted(found) == sorted((*EXPORTED, *extra))
        return found

    def event(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            event = json.loads(self.next_line(deadline))
            if event["event"] == name:
                return event

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of pid, with its start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        fields = _stat(child)
        if fields is not None and fields[0] != "Z":
            found[child] = fields[19]
            todo.extend(children.get(child, []))
    return found


def still_running(before: dict[int, str]) -> list[int]:
    left = []
    for pid, started in before.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] != "Z":
            left.append(pid)
    return left


def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str, str]:
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, result.stdout, result.stderr


def wait_history(ticket: str, count: int, env: dict[str, str], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    sessions: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        code, out, err = run_cli("history", "--ticket", ticket, "--json", env=env)
        assert code == 0, err
        sessions = json.loads(out)["sessions"]
        if len(sessions) >= count:
            return sessions
        time.sleep(0.5)
    raise AssertionError(f"ticket {ticket}: {len(sessions)} archived sessions, wanted {count}")


def assert_clean_exit(dev: Dev, before: dict[int, str], sig: signal.Signals) -> None:
    assert dev.stop(sig) == 0, dev.stderr()[-3000:]
    assert still_running(before) == [], dev.stderr()[-3000:]
    assert "dev: stopped" in dev.stderr()


def env_file_of(dev: Dev, timeout: float = 30) -> Path:
    """The file dev names on stderr once it is ready (`… are also in FILE. In another terminal:`), right after the
    export lines on stdout: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        for line in dev.stderr().splitlines():
            if "The variables to export are also in " in line:
                return Path(line.split(" are also in ", 1)[1].rsplit(". In another terminal:", 1)[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"dev named no env file; stderr:\n{dev.stderr()[-3000:]}")
        time.sleep(0.1)


def wait_gone(before: dict[int, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while still_running(before):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running: {still_running(before)}")
        time.sleep(0.1)


def listening_addresses(pids: Iterator[int] | list[int]) -> set[str]:
    """The local addresses (`ip:port`) the given processes listen on, from /proc (TCP over IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    address, port = fields[1].split(":")
                    raw = bytes.fromhex(address[:width])
                    # /proc prints each 32-bit word in host (little-endian) order
                    host = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    ip = ".".join(str(b) for b in host) if width == 8 else host.hex()
                    found.add(f"{ip}:{int(port, 16)}")
    return found
