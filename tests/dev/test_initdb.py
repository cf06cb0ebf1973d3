"""initdb, run by the embedded PostgreSQL: a failure says initdb's own reason, an interruption leaves nothing behind.

A fake initdb (a shell script in place of PostgreSQL's binaries) plays each case; run as ourselves, under the
name of PostgreSQL's unprivileged user when we are root, so that the permissions hint shows when it applies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.dev.embedded import postgres
from shared.dev.embedded.server import EmbeddedServerError, User

FULL_DISK = """\
echo 'creating subdirectories ... ok'
echo 'running bootstrap script ... [1] FATAL:  could not write to file "pg_wal/x": No space left on device'
echo 'child process exited with exit code 1'
echo 'initdb: removing contents of data directory'
exit 1
"""
NO_PERMISSION = """\
echo 'initdb: error: could not change permissions of directory "pgdata": Operation not permitted' >&2
exit 1
"""
HANGS_WITH_A_CHILD = """\
sleep 300 &
echo $$ $! > "$INITDB_PIDS"
wait
"""


def _bindir(tmp_path: Path, script: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    initdb = bindir / "initdb"
    initdb.write_text("#!/bin/sh\n" + script)
    initdb.chmod(0o755)
    return bindir


@pytest.fixture
def fake_initdb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres, "usable_bindir", lambda bindir, user: bindir)
    as_root = User("nobody", os.getuid(), os.getgid()) if os.geteuid() == 0 else None  # root: the hint's case
    monkeypatch.setattr(postgres, "postgres_user", lambda: as_root)


def _initdb_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str) -> tuple[str, Path]:
    monkeypatch.setattr(postgres, "find_postgres_bindir", lambda: _bindir(tmp_path, script))
    with pytest.raises(EmbeddedServerError) as caught:
        postgres.start_postgres(tmp_path / "postgres")
    return str(caught.value).splitlines()[0], tmp_path / "postgres"


@pytest.mark.usefixtures("fake_initdb")
def test_a_failed_initdb_says_its_own_reason_and_keeps_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, data = _initdb_error(monkeypatch, tmp_path, FULL_DISK)
    assert first == (
        f"initdb of {data / 'pgdata'} failed with code 1: FATAL: could not write to file"
        f' "pg_wal/x": No space left on device (its output: {data / "initdb.log"})'
    )
    assert "creating subdirectories ... ok" in (data / "initdb.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="the hint is about the user that root hands PostgreSQL to")
@pytest.mark.usefixtures("fake_initdb")
def test_the_permissions_hint_shows_only_when_initdb_speaks_of_permissions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, data = _initdb_error(monkeypatch, tmp_path, NO_PERMISSION)
    assert first.startswith(
        f"initdb of {data / 'pgdata'} failed with code 1: error: could not change permissions of directory"
        " \"pgdata\": Operation not permitted (running as user 'nobody' because PostgreSQL refuses root:"
    )


INTERRUPTED = """\
import signal, sys
from pathlib import Path
from shared.dev.embedded import postgres

postgres.find_postgres_bindir = lambda: Path(sys.argv[1])
postgres.usable_bindir = lambda bindir, user: bindir
postgres.postgres_user = lambda: None

def stop(signum, frame):  # as `dev` does
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, stop)
try:
    postgres.start_postgres()
except KeyboardInterrupt:
    sys.exit(130)
"""


def _runs(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for an init that does not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_sigterm_during_initdb_kills_its_children_and_removes_the_temporary_dir(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "INITDB_PIDS": str(pids_file)}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(_bindir(tmp_path, HANGS_WITH_A_CHILD))], env=env)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.is_file() or len(pids_file.read_text().split()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the fake initdb did not start"
            time.sleep(0.05)
        pids = [int(word) for word in pids_file.read_text().split()]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
        assert [pid for pid in pids if _runs(pid)] == []  # initdb and the child it started
        assert [p.name for p in temp.iterdir()] == []  # the temporary data dir, removed once nothing writes in it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if _runs(pid):
                os.kill(pid, signal.SIGKILL)
