"""The children `dev` supervises: the OpenCode simulator, the poller replicas and the gateway, with their probes."""

from __future__ import annotations

from collections.abc import Callable

import redis

from shared.dev.processes import LOOPBACK
from shared.dev.supervisor.child import Child
from shared.dev.supervisor.probes import READY_PROBE_TIMEOUT_S, http_ok, port_open
from shared.dev.supervisor.reporter import Reporter
from shared.store import keys


def simulator(port: int, speed: float, env: dict[str, str], reporter: Reporter, state_file: str | None) -> Child:
    """The simulator on `port`: up once it listens. With a state file its sessions outlive a restart."""
    keep = [] if state_file is None else ["--state-file", state_file]
    return Child(
        "opencode",
        "shared.dev.simulator",
        ["--host", LOOPBACK, "--port", str(port), "--speed", f"{speed:g}", *keep],
        env,
        lambda child: port_open(port),
        reporter,
        describe=f"http://{LOOPBACK}:{port} (simulator)",
    )


def _poller_ready(redis_url: str, replica: str) -> Callable[[Child], bool]:
    """Up once the replica registered itself with this child's pid (an older run's entry does not count)."""

    def check(child: Child) -> bool:
        client = redis.Redis.from_url(redis_url, socket_timeout=READY_PROBE_TIMEOUT_S)
        try:
            pid = client.hget(keys.poller(replica), "pid")
        finally:
            client.close()
        return pid is not None and int(pid) == child.pid

    return check


def poller(n: int, env: dict[str, str], redis_url: str, reporter: Reporter) -> Child:
    """Poller replica number `n` (POLLER_ID dev-poller-N)."""
    replica = f"dev-poller-{n}"
    return Child(
        f"poller-{n}",
        "poller",
        [],
        {**env, "POLLER_ID": replica},
        _poller_ready(redis_url, replica),
        reporter,
        describe=f"replica {replica}",
    )


def gateway(url: str, env: dict[str, str], auth: bool, reporter: Reporter) -> Child:
    """The gateway at `url` (its env says where it listens): up once /readyz answers 200."""
    return Child(
        "gateway",
        "gateway",
        [],
        env,
        lambda child: http_ok(f"{url}/readyz"),
        reporter,
        describe=url + (" (auth on)" if auth else " (auth off)"),
    )
