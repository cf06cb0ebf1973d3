"""Runs the JavaScript tests of gateway/static (tests/js/*.test.mjs) under Node's test runner, via tests/js/run.

Skipped when node or npm is missing; tests/js/run installs the pinned dev dependencies (package-lock.json) with
`npm ci` into a cache outside the work tree, so a failed install fails here rather than skipping.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run"


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed")
def test_node_tests_of_the_stream_client_and_the_react_hook() -> None:
    done = subprocess.run(["bash", str(RUN)], capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    passed, failed = re.search(r"pass (\d+)", output), re.search(r"fail (\d+)", output)
    assert passed and failed and int(passed[1]) > 0 and int(failed[1]) == 0, output[-6000:]
