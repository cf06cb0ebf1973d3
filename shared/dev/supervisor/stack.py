"""DevStack: start everything `dev` runs, announce it, supervise it until interrupted, then stop it all.

See the package docstring (shared.dev.supervisor) for the order, the restart backoff and the shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio

from shared.backoff import Backoff
from shared.dev.embedded.postgres import PostgresServer, start_postgres
from shared.dev.embedded.redis import RedisServer, start_redis
from shared.dev.embedded.server import EmbeddedServerError
from shared.dev.processes import LOOPBACK, free_port
from shared.dev.supervisor import components
from shared.dev.supervisor.announce import announce, queue_demo
from shared.dev.supervisor.child import BACKOFF_BASE_S, BACKOFF_CAP_S, Child
from shared.dev.supervisor.options import DevError, DevOptions
from shared.dev.supervisor.probes import port_free, reachable
from shared.dev.supervisor.reporter import Reporter
from shared.store.connections import pg_connect, store_errors
from shared.store.migrate import migrate

DEFAULT_GATEWAY_PORT = 8080
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
TICK_S = 0.2
STABLE_AFTER_S = 60.0  # up this long: the next crash restarts after the base delay again
PROGRESS_EVERY_S = 10.0


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
        self.opencode_servers = ""  # OPENCODE_SERVERS when `--servers` runs more than one simulator
        self._force = False
        self._signal_name: str | None = None
        self._store_retry: dict[str, tuple[float, Backoff]] = {}  # store -> (next attempt, its backoff)

    # -- the whole run --------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Blocks until SIGINT/SIGTERM/SIGHUP; raises DevError (after stopping everything) when start-up fails."""
        # SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` must still stop us.
        previous = {sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            try:
                self._start()
                announce(self.reporter, self.options, self.environment(), self.pids())
                if self.options.demo:
                    queue_demo(self.reporter, self.environment())
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
        self._start_stores()
        self._start_children()
        self._wait_until_up()

    def _start_stores(self) -> None:
        """Redis, then PostgreSQL, then the migrations."""
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

    def _start_children(self) -> None:
        """The simulator (unless OPENCODE_URL is given), the pollers and the gateway: started, not yet up."""
        assert self.redis is not None
        base_env = self._base_env()
        if self.options.opencode_url is None:
            urls = []
            for n in range(1, self.options.servers + 1):
                sim_port = free_port()
                urls.append(f"http://{LOOPBACK}:{sim_port}")
                sim = components.simulator(sim_port, self.options.sim_speed, base_env, self.reporter)
                if n > 1:
                    sim.name = f"opencode-{n}"
                self.children.append(sim)
            self.opencode_url = urls[0]
            if len(urls) > 1:
                names = ["default", *(f"sim{n}" for n in range(2, len(urls) + 1))]
                self.opencode_servers = ",".join(f"{name}={url}" for name, url in zip(names, urls, strict=True))
                base_env["OPENCODE_SERVERS"] = self.opencode_servers
        else:
            self.opencode_url = self.options.opencode_url
            self.reporter.status(f"opencode   {self.opencode_url} (given by OPENCODE_URL, not supervised)")
            if not reachable(self.opencode_url):
                self.reporter.status(f"warning: nothing answers at {self.opencode_url} yet: the pollers will retry")
        base_env["OPENCODE_URL"] = self.opencode_url
        for n in range(1, self.options.replicas + 1):
            self.children.append(components.poller(n, base_env, self.redis.url, self.reporter))
        gateway_env = {**base_env, "GATEWAY_HOST": LOOPBACK, "GATEWAY_PORT": str(self.gateway_port)}
        if not self.options.auth_secret:
            gateway_env["GATEWAY_AUTH"] = "off"
            self.reporter.status(
                "warning: GATEWAY_AUTH_SECRET is not set, so the gateway serves without tokens (GATEWAY_AUTH=off),"
                f" on {LOOPBACK} only"
            )
        self.children.append(components.gateway(self.gateway_url, gateway_env, self.options.auth_secret, self.reporter))
        for child in self.children:
            self.reporter.status(f"starting {child.name}…")
            child.start()

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

    # -- what it runs: the environment to export and the pids --------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    def environment(self) -> dict[str, str]:
        assert self.redis is not None and self.postgres is not None
        return {
            "GATEWAY_URL": self.gateway_url,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "OPENCODE_URL": self.opencode_url,
        } | ({"OPENCODE_SERVERS": self.opencode_servers} if self.opencode_servers else {})

    def pids(self) -> dict[str, int | None]:
        assert self.redis is not None and self.postgres is not None
        found: dict[str, int | None] = {"redis": self.redis.pid, "postgres": self.postgres.pid}
        found.update({child.name: child.pid for child in self.children})
        return found

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
                    child.backoff.reset()
                delay = round(child.backoff.failed(now), 1)
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
        next_at, backoff = self._store_retry.get(name, (0.0, Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S)))
        if now < next_at:
            return
        if next_at == 0.0:
            self.reporter.status(f"{name} is down; restarting it on port {server.port}")
            self.reporter.event("exited", component=name)
        try:
            server.start()
        except EmbeddedServerError as exc:
            first = str(exc).strip().splitlines()[0]
            delay = round(backoff.failed(now), 1)
            self.reporter.status(f"{name} did not restart ({first}); trying again in {delay:g}s")
            self._store_retry[name] = (time.monotonic() + delay, backoff)
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
