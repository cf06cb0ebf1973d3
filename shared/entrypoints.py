"""The console scripts' entry points. Each imports its process only when called: a Ctrl-C while the interpreter
loads it (click, redis, psycopg: the first tenth of a second) is then one line and exit 130, as it is once the
process runs, not a traceback of whichever import it interrupted."""

from __future__ import annotations

import importlib
import sys

from shared.nesting import make_room

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process Ctrl-C ended


def _run(module: str) -> None:
    make_room()  # for JSON as deep as OpenCode's may be (shared.nesting)
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)
    main()


def sessions() -> None:
    """`opencode-sessions`"""
    _run("shared.cli")


def poller() -> None:
    """`opencode-poller`"""
    _run("poller.main")


def gateway() -> None:
    """`opencode-gateway`"""
    _run("gateway.main")
