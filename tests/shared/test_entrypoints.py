"""The console scripts: a Ctrl-C that lands while a process is still importing is one line and exit 130."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Raises KeyboardInterrupt the moment the entry point imports `module`: where a Ctrl-C in the first tenth of a
# second lands. The entry point itself is imported (as the console script does) before the hook goes in.
INTERRUPT_IMPORT = """
import sys
import shared.entrypoints as entrypoints

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [{script!r}, "--help"]
entrypoints.{function}()
"""


@pytest.mark.parametrize(
    ("script", "function", "module"),
    [
        ("opencode-sessions", "sessions", "click"),
        ("opencode-poller", "poller", "redis"),
        ("opencode-gateway", "gateway", "starlette"),
    ],
)
def test_ctrl_c_while_importing_is_one_line(script: str, function: str, module: str) -> None:
    code = INTERRUPT_IMPORT.format(module=module, script=script, function=function)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr, result.stdout) == (130, "interrupted\n", "")


def test_the_scripts_run_their_process() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import shared.entrypoints as e, sys; sys.argv = ['opencode-sessions', '--help']; e.sessions()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "Queue, follow and operate OpenCode sessions" in result.stdout
