"""The supervisor behind `opencode-sessions dev`: the whole system on one machine, started and stopped as one.

What it runs, in order: Redis and PostgreSQL (shared.dev.embedded.server: real servers on loopback ports, their data in
temporary directories unless a data dir is given), the migrations, an OpenCode (the given OPENCODE_URL, else the
simulator as a child), N poller replicas and the gateway (each `python -m ...` in its own process group).

Supervision: every child is polled a few times a second; one that exits is restarted after a backoff (1 s,
doubling up to 30 s, back to 1 s once it has stayed up a minute). Redis and PostgreSQL are restarted the same
way, on the same port and data dir. During start-up a child that exits before it is up is an error instead:
the stack is torn down and its last output lines are shown.

Shutdown (Ctrl-C, SIGTERM, SIGHUP): SIGTERM to every child's process group (gateway, pollers, simulator: the
pollers give their leases back), SIGKILL after a grace period or on a second Ctrl-C, then PostgreSQL and Redis
are stopped and their temporary directories removed. Children also get PR_SET_PDEATHSIG, so even a SIGKILL of
this process takes them down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

import anyio
import httpx
import redis

from shared import keys
from shared.connections import pg_connect, store_errors
from shared.dev.embedded.server import (
    EmbeddedServerError,
    PostgresServer,
    RedisServer,
    die_with_parent,
    start_postgres,
    start_redis,
)
from shared.errors import SessionLayerError
from shared.migrate import migrate

HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8080
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
TICK_S = 0.2
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 60.0  # up this long: the next crash restarts after the base delay again
TAIL_LINES = 20
READY_PROBE_TIMEOUT_S = 1.0
PROGRESS_EVERY_S = 10.0


class DevError(SessionLayerError):
    """The stack could not start (port taken, a component failed); exit 1 after everything was stopped."""


@dataclass(frozen=True, slots=True)
class DevOptions:
    data_dir: Path | None = None
    gateway_port: int | None = None  # None: 8080, or a free port when 8080 is taken; 0: a free port
    replicas: int = 2
    opencode_url: str | None = None  # None: run the simulator
    sim_speed: float = 1.0
    log_level: str = "warning"
    demo: bool = False
    as_json: bool = False
    auth_secret: bool = False  # GATEWAY_AUTH_SECRET is set: the gateway checks tokens


class Reporter:
    """Status lines on stderr (`dev: …`), child output prefixed with its name, events as JSON lines on stdout."""

    def __init__(self, as_json: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.as_json = as_json
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        self._write(self._stderr, f"dev: {text}")

    def child_line(self, name: str, line: str) -> None:
        self._write(self._stderr, f"[{name}] {line}")

    def out(self, text: str) -> None:
        self._write(self._stdout, text)

    def event(self, name: str, **fields: Any) -> None:
        if self.as_json:
            self._write(self._stdout, json.dumps({"event": name, **fields}, ensure_ascii=False))

    def _write(self, stream: IO[str], text: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # a closed terminal must not stop the shutdown
            stream.write(text + "\n")
            stream.flush()


# --- children that die with us -------------------------------------------------------------------------------------


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
    backoff_s: float = BACKOFF_BASE_S
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


# --- readiness probes ----------------------------------------------------------------------------------------------


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(READY_PROBE_TIMEOUT_S)
        return sock.connect_ex((host, port)) == 0


def port_free(port: int, host: str = HOST) -> bool:
    """Nobody listens there and we could bind it (SO_REUSEADDR, as uvicorn binds)."""
    if port_open(port, host):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=READY_PROBE_TIMEOUT_S, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        return port_open(port, parts.hostname or HOST)
    except OSError:
        return False


# --- the stack -----------------------------------------------------------------------------------------------------


class DevStack:
    """Start everything, announce the URLs, supervise until interrupted, then stop everything (see module doc)."""

    def __init__(self, options: DevOptions, reporter: Reporter | None = None) -> None:
        self.options = options
        self.reporter = reporter or Reporter(options.as_json)
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.children: list[Child] = []
        self.gateway_port = 0
        self.opencode_url = ""
        self._force = False
        self._signal_name: str | None = None
        self._store_retry: dict[str, tuple[float, float]] = {}  # store -> (next attempt, backoff)

    # -- the whole run --------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Blocks until SIGINT/SIGTERM/SIGHUP; raises DevError (after stopping everything) when start-up fails."""
        # SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` must still stop us.
        previous = {sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            try:
                self._start()
                self._announce()
                if self.options.demo:
                    self._demo()
                self._supervise()
            except KeyboardInterrupt:
                self.reporter.status(f"{self._signal_name or 'interrupted'}: stopping everything")
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, self._force_stop)
                self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._signal_name = signal.Signals(signum).name
        raise KeyboardInterrupt

    def _force_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self._force:
            self._force = True
            self.reporter.status("second interrupt: killing what is left")

    # -- start-up -------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self.gateway_port = self._pick_gateway_port()
        data_dir = self.options.data_dir
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:  # PostgreSQL refuses root and runs as another user, who must traverse it
                data_dir.chmod(data_dir.stat().st_mode | 0o011)
        self.reporter.status("starting Redis…")
        self.redis = self._embedded(
            "Redis", lambda: start_redis(None if data_dir is None else data_dir / "redis", persist=data_dir is not None)
        )
        where = f"data in {self.redis.data_dir}" if data_dir is not None else "temporary data"
        self.reporter.status(f"redis      up  {self.redis.url} (pid {self.redis.pid}, {where})")
        fresh = data_dir is None or not (data_dir / "postgres" / "pgdata" / "PG_VERSION").is_file()
        self.reporter.status("starting PostgreSQL…" + (" (initdb first: a few seconds)" if fresh else ""))
        self.postgres = self._embedded(
            "PostgreSQL", lambda: start_postgres(None if data_dir is None else data_dir / "postgres")
        )
        where = f"data in {self.postgres.data_dir}" if data_dir is not None else "temporary data"
        self.reporter.status(f"postgres   up  {self.postgres.url} (pid {self.postgres.pid}, {where})")
        applied = anyio.run(self._migrate, self.postgres.url)
        self.reporter.status(f"migrations {'applied: ' + ', '.join(applied) if applied else 'up to date'}")

        base_env = self._base_env()
        if self.options.opencode_url is None:
            sim_port = free_port()
            self.opencode_url = f"http://{HOST}:{sim_port}"
            self.children.append(
                Child(
                    "opencode",
                    "shared.dev.simulator.app",
                    ["--host", HOST, "--port", str(sim_port), "--speed", f"{self.options.sim_speed:g}"],
                    base_env,
                    lambda child: port_open(sim_port),
                    self.reporter,
                    describe=f"{self.opencode_url} (simulator)",
                )
            )
        else:
            self.opencode_url = self.options.opencode_url
            self.reporter.status(f"opencode   {self.opencode_url} (given by OPENCODE_URL, not supervised)")
            if not _reachable(self.opencode_url):
                self.reporter.status(f"warning: nothing answers at {self.opencode_url} yet: the pollers will retry")
        base_env["OPENCODE_URL"] = self.opencode_url
        for n in range(1, self.options.replicas + 1):
            replica = f"dev-poller-{n}"
            self.children.append(
                Child(
                    f"poller-{n}",
                    "poller",
                    [],
                    {**base_env, "POLLER_ID": replica},
                    self._poller_ready(replica),
                    self.reporter,
                    describe=f"replica {replica}",
                )
            )
        gateway_env = {**base_env, "GATEWAY_HOST": HOST, "GATEWAY_PORT": str(self.gateway_port)}
        if not self.options.auth_secret:
            gateway_env["GATEWAY_AUTH"] = "off"
            self.reporter.status(
                "warning: GATEWAY_AUTH_SECRET is not set, so the gateway serves without tokens (GATEWAY_AUTH=off),"
                f" on {HOST} only"
            )
        gateway_url = self.gateway_url
        self.children.append(
            Child(
                "gateway",
                "gateway",
                [],
                gateway_env,
                lambda child: _http_ok(f"{gateway_url}/readyz"),
                self.reporter,
                describe=gateway_url + (" (auth on)" if self.options.auth_secret else " (auth off)"),
            )
        )
        for child in self.children:
            self.reporter.status(f"starting {child.name}…")
            child.start()
        self._wait_until_up()

    def _pick_gateway_port(self) -> int:
        requested = self.options.gateway_port
        if requested == 0:
            return free_port()
        if requested is not None:
            if not port_free(requested):
                raise DevError(f"port {requested} is already in use: choose another --port, or 0 for a free one")
            return requested
        if port_free(DEFAULT_GATEWAY_PORT):
            return DEFAULT_GATEWAY_PORT
        port = free_port()
        self.reporter.status(f"port {DEFAULT_GATEWAY_PORT} is in use: the gateway listens on {port} instead")
        return port

    def _embedded(self, kind: str, start: Callable[[], Any]) -> Any:
        try:
            return start()
        except EmbeddedServerError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
            raise DevError(f"{kind} did not start: {first}") from exc

    @staticmethod
    async def _migrate(url: str) -> list[str]:
        conn = await pg_connect(url)
        try:
            with store_errors("PostgreSQL"):
                return await migrate(conn)
        finally:
            await conn.close()

    def _base_env(self) -> dict[str, str]:
        assert self.redis is not None and self.postgres is not None
        return {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "LOG_FORMAT": "console",
            "LOG_LEVEL": self.options.log_level,
            "PYTHONUNBUFFERED": "1",
        }

    def _poller_ready(self, replica: str) -> Callable[[Child], bool]:
        assert self.redis is not None
        url = self.redis.url

        def check(child: Child) -> bool:
            client = redis.Redis.from_url(url, socket_timeout=READY_PROBE_TIMEOUT_S)
            try:
                pid = client.hget(keys.poller(replica), "pid")
            finally:
                client.close()
            return pid is not None and int(pid) == child.pid

        return check

    def _wait_until_up(self) -> None:
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        next_note = started + PROGRESS_EVERY_S
        waiting = list(self.children)
        while waiting:
            if time.monotonic() > next_note:
                next_note += PROGRESS_EVERY_S
                elapsed = time.monotonic() - started
                self.reporter.status(f"still waiting for {', '.join(c.name for c in waiting)} ({elapsed:.0f}s)")
            for child in list(waiting):
                code = child.exited()
                if code is not None:
                    raise DevError(
                        f"{child.name} exited with code {code} while starting; its last output: "
                        + " | ".join(child.tail)[-1500:]
                    )
                if child.ready():
                    child.up = True
                    waiting.remove(child)
                    self._report_up(child)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(c.name for c in waiting)
                raise DevError(f"not up after {START_TIMEOUT_S:.0f}s: {names}")
            if waiting:
                time.sleep(0.05)

    def _report_up(self, child: Child) -> None:
        again = f", restart #{child.restarts}" if child.restarts else ""
        self.reporter.status(f"{child.name:<10} up  {child.describe} (pid {child.pid}{again})")
        self.reporter.event("up", component=child.name, pid=child.pid, restarts=child.restarts)

    # -- the announcement -----------------------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.gateway_port}"

    def environment(self) -> dict[str, str]:
        assert self.redis is not None and self.postgres is not None
        return {
            "GATEWAY_URL": self.gateway_url,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "OPENCODE_URL": self.opencode_url,
        }

    def pids(self) -> dict[str, int | None]:
        assert self.redis is not None and self.postgres is not None
        found: dict[str, int | None] = {"redis": self.redis.pid, "postgres": self.postgres.pid}
        found.update({child.name: child.pid for child in self.children})
        return found

    def _announce(self) -> None:
        env = self.environment()
        if self.options.as_json:
            self.reporter.event(
                "ready",
                env=env,
                pids=self.pids(),
                dataDir=None if self.options.data_dir is None else str(self.options.data_dir.absolute()),
                auth=self.options.auth_secret,
            )
        else:
            for name, value in env.items():
                self.reporter.out(f"{name}={shlex.quote(value)}")
        say = self.reporter.status
        printed = "the `ready` event's env" if self.options.as_json else "the four KEY=VALUE lines printed on stdout"
        say(f"ready. In another terminal, export {printed}, then:")
        if self.options.auth_secret:
            say("  export GATEWAY_TOKEN=$(opencode-sessions token --admin)")
        say('  opencode-sessions enqueue --type ask --ticket T-1 --prompt "TOOL run a command"')
        say("  opencode-sessions watch <the ses_… id it printed>")
        say("  opencode-sessions status;  opencode-sessions history --ticket T-1")
        kept = f"data is kept in {self.options.data_dir}" if self.options.data_dir else "temporary data is removed"
        say(f"Ctrl-C stops everything ({kept}).")

    def _demo(self) -> None:
        from shared.dev.demo import enqueue_demo

        env = self.environment()
        try:
            queued = anyio.run(enqueue_demo, env["REDIS_URL"], env["DATABASE_URL"], env["OPENCODE_URL"])
        except SessionLayerError as exc:
            self.reporter.status(f"warning: the demo sessions could not be queued: {exc.message}")
            return
        self.reporter.event("demo", sessions=queued)
        self.reporter.status("demo sessions queued (ticket demo):")
        for item in queued:
            self.reporter.status(f"  {item['title']:<22} opencode-sessions watch {item['sessionId']}")

    # -- supervision ----------------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            self.tick()
            time.sleep(TICK_S)

    def tick(self) -> None:
        """One round: restart what died (when its backoff is over), report what came up."""
        now = time.monotonic()
        for name, server in (("redis", self.redis), ("postgres", self.postgres)):
            if server is not None and not server.is_running():
                self._restart_store(name, server, now)
        for child in self.children:
            code = child.exited()
            if code is not None:
                if now - child.started_at >= STABLE_AFTER_S:
                    child.backoff_s = BACKOFF_BASE_S
                delay = child.backoff_s
                child.backoff_s = min(BACKOFF_CAP_S, delay * 2)
                child.next_start = now + delay
                self.reporter.status(f"{child.name} exited with code {code}; restarting in {delay:g}s")
                self.reporter.event("exited", component=child.name, code=code, restartInS=delay)
            elif child.proc is None and now >= child.next_start:
                child.restarts += 1
                child.start()
            elif child.proc is not None and not child.up and child.ready():
                child.up = True
                self._report_up(child)

    def _restart_store(self, name: str, server: RedisServer | PostgresServer, now: float) -> None:
        next_at, backoff = self._store_retry.get(name, (0.0, BACKOFF_BASE_S))
        if now < next_at:
            return
        if next_at == 0.0:
            self.reporter.status(f"{name} is down; restarting it on port {server.port}")
            self.reporter.event("exited", component=name)
        try:
            server.start()
        except EmbeddedServerError as exc:
            first = str(exc).strip().splitlines()[0]
            self.reporter.status(f"{name} did not restart ({first}); trying again in {backoff:g}s")
            self._store_retry[name] = (time.monotonic() + backoff, min(BACKOFF_CAP_S, backoff * 2))
            return
        self._store_retry.pop(name, None)
        self.reporter.status(f"{name:<10} up  {server.url} (pid {server.pid}, restarted)")
        self.reporter.event("up", component=name, pid=server.pid)

    # -- shutdown -------------------------------------------------------------------------------------------------

    def _stop(self) -> None:
        running = [c for c in self.children if c.proc is not None]
        if running:
            self.reporter.status("stopping " + ", ".join(c.name for c in running) + "…")
        for child in running:
            child.signal_group(signal.SIGCONT)
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            proc = child.proc
            assert proc is not None
            while proc.poll() is None and not self._force and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                self.reporter.status(f"{child.name} did not stop: killing it")
                child.signal_group(signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its process group
            child.exited()
        for name, server in (("PostgreSQL", self.postgres), ("Redis", self.redis)):
            if server is not None:
                self.reporter.status(f"stopping {name}…")
                try:
                    server.close()
                except Exception as exc:  # keep going: the other server must stop too
                    self.reporter.status(f"warning: {name} did not stop cleanly: {exc}")
        if self.redis is None:
            return  # nothing was started
        kept = f"data kept in {self.options.data_dir}" if self.options.data_dir else "temporary data removed"
        self.reporter.status(f"stopped ({kept})")
        self.reporter.event("stopped")
