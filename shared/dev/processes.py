"""Child processes and ports on loopback: the one free_port and the one die_with_parent of the repository."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port(host: str = LOOPBACK) -> int:
    """Ask the kernel for a free port; whoever binds it next races everyone else, so callers retry or tolerate."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Callable[..., int] | None:
    """Resolve prctl(2) once in the parent: dlsym in a forked child of a threaded process can deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent(death_signal: int) -> Callable[[], None]:
    """Build a preexec_fn: the kernel sends death_signal to the child when its parent goes away, even on SIGKILL.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: fork from a thread that lives as long
    as the child should (see shared.dev.embedded.server's spawner).
    """
    parent_pid = os.getpid()
    prctl = _PRCTL

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup
