"""The README's examples: every shell block either runs here, verbatim, or says why CI cannot run it.

A shell block is preceded by `<!-- readme: run (…) -->` or `<!-- readme: not run in CI: <reason> -->`. The `run`
blocks go, in order, each to a fresh `bash` (a new terminal: no variable of ours, only HOME, PATH and TMPDIR),
from the repository root, against the `dev --demo` that the first block starts. The Python API snippet must be
lines of examples/python_api.py, which tests/shared/test_python_api.py runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.dev_stack import Dev, assert_clean_exit, descendants, fresh_env, world_traversable_dir

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "python_api.py"
SHELLS = ("sh", "bash", "shell", "console")
MARK = re.compile(r"^<!-- readme: (run \(.+\)|not run in CI: (?P<reason>.+\S)) -->$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, str]]:
    """(language, the line before the fence, body) for every fenced block."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append((match[1], before, match[2]))
    return found


def shell_blocks() -> list[tuple[str, str]]:
    return [(before, body) for language, before, body in blocks() if language in SHELLS]


def test_every_shell_block_runs_in_ci_or_says_why_not():
    found = shell_blocks()
    assert len(found) >= 4
    for before, body in found:
        assert MARK.match(before), f"no `<!-- readme: … -->` line before:\n{body}"


def test_the_python_api_snippet_is_the_runnable_example():
    (snippet,) = [body for language, _, body in blocks() if language == "python" and "await enqueue(" in body]
    example = {line.strip() for line in EXAMPLE.read_text(encoding="utf-8").splitlines()}
    missing = [line for line in snippet.splitlines() if line.strip() and line.strip() not in example]
    assert missing == []


def test_the_runnable_blocks_work_verbatim_in_a_fresh_shell():
    if not (ROOT / ".venv" / "bin" / "activate").is_file():
        pytest.skip("the README's second terminal sources .venv/bin/activate: no .venv in this checkout")
    first, *_ = shell_blocks()
    assert first[1].strip() == "bash .ci/install && .venv/bin/opencode-sessions dev --demo"
    runnable = [body for before, body in shell_blocks() if before.startswith("<!-- readme: run")]
    assert len(runnable) >= 2
    with world_traversable_dir("opencode-readme-tmp-") as tmpdir:
        dev = Dev(["--demo"], fresh_env(tmpdir))
        try:
            dev.environment()
            terminal = {"HOME": os.environ.get("HOME", str(tmpdir)), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmpdir)}
            outputs = []
            for body in runnable:
                result = subprocess.run(
                    ["bash", "-c", "set -eo pipefail\n" + body],
                    cwd=ROOT,
                    env=terminal,
                    capture_output=True,
                    text=True,
                    timeout=180,
                    check=False,
                )
                assert result.returncode == 0, f"{body}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
                outputs.append(result.stdout)
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)
    second_terminal = outputs[0].splitlines()
    assert "status: completed" in second_terminal
    assert any(line.startswith("after the follow-up: completed") for line in second_terminal)
