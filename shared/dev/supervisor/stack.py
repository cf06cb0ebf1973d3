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
from shared.dev.processes import LOOPBACK
from shared.dev.supervisor import components, envfile
from shared.dev.supervisor.announce import announce, queue_demo
from shared.dev.supervisor.child import BACKOFF_BASE_S, BACKOFF_CAP_S, Child
from shared.dev.supervisor.inherited import inherited
from shared.dev.supervisor.least_privilege import (
    GATEWAY_ROLE,
    GATEWAY_USER,
    POLLER_USER,
    apply_gateway_role,
    redis_acl_users,
)
from shared.dev.supervisor.opencode_choice import choose_opencode, choose_servers
from shared.dev.supervisor.options import DevError, DevOptions
from shared.dev.supervisor.ports import gateway_port, keep_or_pick, without_password
from shared.dev.supervisor.reporter import Reporter
from shared.dev.supervisor.rundir import DATA_DIR_ENV, DataDirLock, RunDir, sweep_orphans, write_private
from shared.dev.supervisor.state import DevState
from shared.store.connections import pg_connect, store_errors
from shared.store.migrate import MigrationReport, migrate_report

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
        self.simulated = False  # opencode_url is our own simulator
        self.state = DevState()
        self.run_dir: RunDir | None = None
        self._data_lock: DataDirLock | None = None
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
                announce(self.reporter, self.options, self.environment(), self.pids(), self.env_file)
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
        self._claim_dirs()
        self.gateway_port = gateway_port(self.options.gateway_port, self.state.ports, self.reporter)
        self._start_stores()
        self._start_children()
        self._wait_until_up()
        self._write_env_files()

    def _claim_dirs(self) -> None:
        """Lock the data dir (one dev per data dir), clear what killed devs left, make this run's directory."""
        data_dir = self.options.data_dir
        if data_dir is not None:
            self._data_lock = DataDirLock(data_dir)
            self.state = DevState.load(data_dir)
            self.state.save(data_dir)
        for path in sweep_orphans():
            self.reporter.status(f"removed {path}, left behind by a dev that was killed")
        self.run_dir = RunDir.create()

    def _write_env_files(self) -> None:
        assert self.run_dir is not None
        text = envfile.render(self.environment(), pid=os.getpid(), simulator=self.simulated)
        write_private(self.run_dir.env_file, text)
        if self.options.data_dir is not None:
            write_private(self.options.data_dir / DATA_DIR_ENV, text)
        self.state.save(self.options.data_dir)

    @property
    def env_file(self) -> str:
        """The file the second terminal may `source` (the data dir's, which outlives this run, when there is one)."""
        assert self.run_dir is not None
        return str(self.options.data_dir / DATA_DIR_ENV if self.options.data_dir else self.run_dir.env_file)

    def _start_stores(self) -> None:
        """Redis, then PostgreSQL, then the migrations."""
        assert self.run_dir is not None
        data_dir = self.options.data_dir
        if data_dir is not None and os.geteuid() == 0:  # PostgreSQL refuses root: runs as a user who must traverse
            data_dir.chmod(data_dir.stat().st_mode | 0o011)
        home = data_dir or self.run_dir.path  # the temporary data lives in the run dir: a killed dev's is swept
        credentials = self.state.credentials
        self.reporter.status("starting Redis…")
        redis_port = keep_or_pick("redis", self.state.ports, self.reporter)
        self.redis = self._embedded(
            "Redis",
            lambda: start_redis(
                home / "redis",
                persist=data_dir is not None,
                port=redis_port,
                password=credentials.redis_admin,
                acl_users=redis_acl_users(credentials),
            ),
        )
        where = f"data in {self.redis.data_dir}" if data_dir is not None else "temporary data"
        self.reporter.status(f"redis      up  {without_password(self.redis.url)} (pid {self.redis.pid}, {where})")
        fresh = data_dir is None or not (data_dir / "postgres" / "pgdata" / "PG_VERSION").is_file()
        self.reporter.status("starting PostgreSQL…" + (" (initdb first: a few seconds)" if fresh else ""))
        pg_port = keep_or_pick("postgres", self.state.ports, self.reporter)
        self.postgres = self._embedded(
            "PostgreSQL",
            lambda: start_postgres(
                home / "postgres", port=pg_port, password=credentials.postgres_admin, durable=data_dir is not None
            ),
        )
        where = f"data in {self.postgres.data_dir}" if data_dir is not None else "temporary data"
        self.reporter.status(f"postgres   up  {without_password(self.postgres.url)} (pid {self.postgres.pid}, {where})")
        report = anyio.run(self._migrate, self.postgres.url)
        self.reporter.status(
            f"migrations {'applied: ' + ', '.join(report.applied) if report.applied else 'up to date'}"
        )
        apply_gateway_role(self.postgres.url, credentials.postgres_gateway)

    def _start_children(self) -> None:
        """The simulator (unless OPENCODE_URL is given), the pollers and the gateway: started, not yet up."""
        assert self.redis is not None and self.postgres is not None
        base_env = self._base_env()
        choice = choose_opencode(self.options.opencode_url, from_environment=self.options.opencode_from_env)
        if choice.note is not None:
            self.reporter.status(choice.note)
        if choice.url is None:
            self.simulated = True
            data_dir = self.options.data_dir
            urls = []
            for n in range(1, self.options.servers + 1):
                name = "opencode" if n == 1 else f"opencode-{n}"
                sim_port = keep_or_pick(name, self.state.ports, self.reporter)
                urls.append(f"http://{LOOPBACK}:{sim_port}")
                state_file = None if data_dir is None else str(data_dir / f"{name}-simulator.json")
                sim = components.simulator(sim_port, self.options.sim_speed, base_env, self.reporter, state_file)
                sim.name = name
                self.children.append(sim)
            self.opencode_url = urls[0]
            if len(urls) > 1:
                names = ["default", *(f"sim{n}" for n in range(2, len(urls) + 1))]
                self.opencode_servers = ",".join(f"{name}={url}" for name, url in zip(names, urls, strict=True))
        else:
            self.opencode_url = choice.url
        exported = choose_servers(os.environ.get("OPENCODE_SERVERS"), simulated=self.simulated)
        if exported.note is not None:
            self.reporter.status(exported.note)
        self.opencode_servers = self.opencode_servers or exported.url or ""
        base_env["OPENCODE_URL"] = self.opencode_url
        if self.opencode_servers:
            base_env["OPENCODE_SERVERS"] = self.opencode_servers
        credentials = self.state.credentials
        poller_env = {**base_env, "REDIS_URL": self.redis.user_url(POLLER_USER, credentials.redis_poller)}
        for n in range(1, self.options.replicas + 1):
            self.children.append(components.poller(n, poller_env, self.redis.url, self.reporter))
        gateway_env = {
            **base_env,
            "REDIS_URL": self.redis.user_url(GATEWAY_USER, credentials.redis_gateway),
            "DATABASE_URL": self.postgres.role_url(GATEWAY_ROLE, credentials.postgres_gateway),
            "GATEWAY_HOST": LOOPBACK,
            "GATEWAY_PORT": str(self.gateway_port),
            "GATEWAY_AUTH_SECRET": self.gateway_secret,
        }
        if not self.options.auth_secret:
            gateway_env["GATEWAY_AUTH"] = "off"
            del gateway_env["GATEWAY_AUTH_SECRET"]
            self.reporter.status(
                "warning: the gateway serves without tokens (GATEWAY_AUTH=off; --auth or GATEWAY_AUTH_SECRET turns"
                f" them on), on {LOOPBACK} only"
            )
        self.children.append(components.gateway(self.gateway_url, gateway_env, self.options.auth_secret, self.reporter))
        for child in self.children:
            self.reporter.status(f"starting {child.name}…")
            child.start()

    @property
    def gateway_secret(self) -> str:
        return self.options.secret or self.state.credentials.gateway_secret

    def _embedded(self, kind: str, start: Callable[[], Any]) -> Any:
        try:
            return start()
        except EmbeddedServerError as exc:
            raise DevError(f"{kind} did not start: {exc.summary()}") from exc

    @staticmethod
    async def _migrate(url: str) -> MigrationReport:
        conn = await pg_connect(url)
        try:
            with store_errors("PostgreSQL"):
                return await migrate_report(conn)
        finally:
            await conn.close()

    def _base_env(self) -> dict[str, str]:
        assert self.redis is not None and self.postgres is not None
        return {
            **inherited(os.environ),  # not what an earlier dev exported: dev decides those (inherited module)
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
            "REDIS_URL": self.redis.user_url(POLLER_USER, self.state.credentials.redis_poller),
            "DATABASE_URL": self.postgres.url,
            "OPENCODE_URL": self.opencode_url,
            "GATEWAY_AUTH_SECRET": self.gateway_secret,
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
            delay = round(backoff.failed(now), 1)
            self.reporter.status(f"{name} did not restart ({exc.summary()}); trying again in {delay:g}s")
            self._store_retry[name] = (time.monotonic() + delay, backoff)
            return
        self._store_retry.pop(name, None)
        self.reporter.status(f"{name:<10} up  {without_password(server.url)} (pid {server.pid}, restarted)")
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
        if self.run_dir is not None:
            self.run_dir.close()
        if self._data_lock is not None:
            self._data_lock.release()
        if self.redis is None:
            return  # nothing was started
        kept = f"data kept in {self.options.data_dir}" if self.options.data_dir else "temporary data removed"
        self.reporter.status(f"stopped ({kept})")
        self.reporter.event("stopped")
