"""dev's run directories: a running dev's is kept and found by `dev --env`, a killed dev's is swept."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from shared.dev.supervisor.options import DevError
from shared.dev.supervisor.rundir import (
    ENV_NAME,
    LOCK_NAME,
    RUN_PREFIX,
    YOUNG_S,
    DataDirLock,
    RunDir,
    running_env_files,
    sweep_orphans,
)


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_a_held_directory_is_kept_and_listed_and_an_orphan_is_swept(tmp_path):
    running = RunDir.create()
    running.env_file.write_text("export A=1\n")
    orphan = tmp_path / f"{RUN_PREFIX}killed"
    orphan.mkdir()
    (orphan / LOCK_NAME).write_text("12345\n")  # its holder is gone: nobody has it locked
    (orphan / ENV_NAME).write_text("export A=2\n")
    starting = tmp_path / f"{RUN_PREFIX}starting"
    starting.mkdir()  # no lock file yet, and new: a dev that is just starting
    stale = tmp_path / f"{RUN_PREFIX}stale"
    stale.mkdir()
    old = time.time() - YOUNG_S - 5
    os.utime(stale, (old, old))
    try:
        assert running_env_files() == [running.env_file]
        assert sorted(sweep_orphans()) == sorted([orphan, stale])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.path.name, starting.name])
    finally:
        running.close()
    assert not running.path.exists()
    assert running_env_files() == []


def test_a_data_dir_is_locked_by_one_dev_at_a_time(tmp_path):
    data = tmp_path / "data"
    first = DataDirLock(data)
    try:
        with pytest.raises(DevError, match=rf"is in use by another `opencode-sessions dev` \(pid {os.getpid()}\)"):
            DataDirLock(data)
    finally:
        first.release()
    DataDirLock(data).release()  # free again once released (or once its holder died)
