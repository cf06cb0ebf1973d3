"""Where `dev` talks: status lines on stderr, the children's output prefixed, JSON events on stdout.

Status lines and the children's output (their logs may quote OpenCode or a session) are made visible as every
line of the CLI is (shared.cli.terminal); the `export` lines and the JSON events are written exactly.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from typing import IO, Any

from shared.cli.terminal import visible


class Reporter:
    """Status lines on stderr (`dev: …`), child output prefixed with its name, events as JSON lines on stdout."""

    def __init__(self, as_json: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.as_json = as_json
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        self._write(self._stderr, visible(f"dev: {text}"))

    def child_line(self, name: str, line: str) -> None:
        self._write(self._stderr, visible(f"[{name}] {line}"))

    def out(self, text: str) -> None:
        self._write(self._stdout, text)

    def event(self, name: str, **fields: Any) -> None:
        if self.as_json:
            self._write(self._stdout, json.dumps({"event": name, **fields}, ensure_ascii=False))

    def _write(self, stream: IO[str], text: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # a closed terminal must not stop the shutdown
            stream.write(text + "\n")
            stream.flush()
