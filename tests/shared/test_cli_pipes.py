"""`opencode-sessions … | head`: a reader that closes the pipe early is not an error worth a line."""

from __future__ import annotations

import os
import subprocess
import sys

COMMAND = [sys.executable, "-c", "from shared.cli import main; main()"]


def run_into_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """stdout is a pipe whose reader is gone before the command starts: its first write fails, every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*COMMAND, *args], stdout=write_end, stderr=subprocess.PIPE, env=env, text=True, timeout=60, check=False
        )
    finally:
        os.close(write_end)


def test_a_closed_pipe_ends_the_command_quietly():
    env = {**os.environ, "GATEWAY_AUTH_SECRET": "pipe-test-secret-0123456789abcdef"}
    result = run_into_closed_pipe("token", "--admin", env=env)
    assert result.stderr == ""
    assert result.returncode == 1  # click's code for a broken pipe; no `error: unexpected BrokenPipeError`


def test_help_into_a_closed_pipe_too():
    result = run_into_closed_pipe("--help", env=dict(os.environ))
    assert result.stderr == ""
    assert result.returncode == 1  # click's code for a broken pipe; no `error: unexpected BrokenPipeError`
