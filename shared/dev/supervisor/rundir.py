"""Where a running dev keeps its temporary data, its env file and its lock; what a killed dev left behind.

Every dev holds an exclusive flock(2) on `<tmp>/opencode-dev-XXXX/lock` for as long as it runs; the kernel drops
it when the process dies, even by SIGKILL. So the next dev knows which of these directories are orphaned (no
holder) and removes them, and `dev --env` knows which devs are running. A --data-dir is locked the same way
(`DIR/dev.lock`), so that two devs never start servers on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shared.dev.supervisor.options import DevError

RUN_PREFIX = "opencode-dev-"
LOCK_NAME = "lock"
ENV_NAME = "env"
DATA_DIR_LOCK = "dev.lock"
DATA_DIR_ENV = "dev.env"
YOUNG_S = 60.0  # a directory without a lock file yet may be a dev that is just starting


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on `path` (created if missing), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        pid = path.read_text(encoding="utf-8").split()[0]
        return f"pid {pid}"
    return "pid unknown"


def _stamp(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def write_private(path: Path, text: str) -> None:
    """A file only our user can read (it holds passwords), replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    tmp.replace(path)


@dataclass
class RunDir:
    """This dev's directory under the system temp dir, locked while it runs; removed by close()."""

    path: Path
    _fd: int

    @classmethod
    def create(cls) -> RunDir:
        path = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
        fd = _try_lock(path / LOCK_NAME)
        assert fd is not None  # a brand-new directory: nobody else knows it
        _stamp(fd)
        if os.geteuid() == 0:  # PostgreSQL refuses root and runs as another user, who must traverse it
            path.chmod(0o711)
        return cls(path, fd)

    @property
    def env_file(self) -> Path:
        return self.path / ENV_NAME

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


def _ours() -> list[Path]:
    """The run directories in the temp dir that belong to this user (a shared /tmp holds other users' too)."""
    found = []
    for path in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_uid == os.getuid():
                found.append(path)
    return found


def sweep_orphans() -> list[Path]:
    """Remove the run directories of devs that died without cleaning up (SIGKILL); returns what was removed."""
    removed = []
    for path in _ours():
        with contextlib.suppress(OSError):  # another dev may be removing the same directory right now
            if _orphaned(path):
                removed.append(path)
    return removed


def _orphaned(path: Path) -> bool:
    """Remove `path` if no running dev holds its lock (or it never got one and is not new); True if removed."""
    lock = path / LOCK_NAME
    if not lock.exists():
        if time.time() - path.stat().st_mtime < YOUNG_S:
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    fd = _try_lock(lock)
    if fd is None:
        return False  # a running dev holds it
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)
    return True


def running_env_files() -> list[Path]:
    """The env files of the devs running now (their run directory is locked), newest first."""
    found: list[tuple[float, Path]] = []
    for path in _ours():
        lock, env = path / LOCK_NAME, path / ENV_NAME
        with contextlib.suppress(OSError):
            if env.exists() and held(lock):
                found.append((env.stat().st_mtime, env))
    return [env for _, env in sorted(found, reverse=True)]


class DataDirLock:
    """The exclusive lock on a --data-dir: a second dev on it fails with one line naming the first."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DATA_DIR_LOCK
        fd = _try_lock(self.path)
        if fd is None:
            raise DevError(
                f"--data-dir {data_dir} is in use by another `opencode-sessions dev` ({_holder(self.path)}):"
                " stop that one first, or choose another directory"
            )
        _stamp(fd)
        self._fd = fd

    def release(self) -> None:
        os.close(self._fd)


def held(path: Path) -> bool:
    """Whether some process holds the lock file at `path` (a dev runs on that data dir)."""
    if not path.exists():
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False
