"""A supervised `python -m MODULE` child of `dev`: its process group, readiness, output tail and restart backoff."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from shared.backoff import Backoff
from shared.dev.processes import die_with_parent
from shared.dev.supervisor.reporter import Reporter

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
TAIL_LINES = 20


@dataclass(eq=False)
class Child:
    """A supervised `python -m MODULE` child: its process, readiness, output tail and restart schedule."""

    name: str
    module: str
    args: list[str]
    env: dict[str, str]
    ready_check: Callable[[Child], bool]
    reporter: Reporter
    describe: str = ""
    proc: subprocess.Popen[bytes] | None = None
    up: bool = False
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S))
    restarts: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        self.up = False
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C is ours: we stop the children in order
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._forward, args=(self.proc.stdout,), name=f"dev-{self.name}-output", daemon=True
        )
        self._reader.start()

    def _forward(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                self.tail.append(line)
                self.reporter.child_line(self.name, line)

    def exited(self) -> int | None:
        """The exit code once the running process has exited (it is then forgotten), else None."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None:
            self.proc = None
            self.up = False
            self.join_output()
        return code

    def ready(self) -> bool:
        try:
            return self.ready_check(self)
        except Exception:
            return False

    def signal_group(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def join_output(self, timeout: float = 1.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def output_tail(self) -> str:
        return "\n".join(self.tail) or "(no output)"
