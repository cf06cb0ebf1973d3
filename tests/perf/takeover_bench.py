"""P6: how long a replica's sessions stay unowned after it dies (kill -9) or is stopped (SIGTERM).

    python -m tests.perf.takeover_bench [--sessions 100] [--lease-ttl-ms 5000] [--rounds 3]

Poller A holds every session (sessions served by the stateless load OpenCode, so none ends); poller B runs
beside it with nothing to do. A is killed; the time until B holds every lease is the takeover time. Then the
same with SIGTERM (B stopped, a fresh C takes over). Goal: kill -9 <= lease TTL + one poll; SIGTERM <= 1 s.
Then the catch-up: how long after the takeover B polls every session on its cadence again (it reads each one's
live record, fetches its whole message list once and records its claim in PostgreSQL first).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import time
from contextlib import ExitStack

import anyio
from redis import Redis

from shared.dev.processes import free_port
from shared.store import keys
from tests.perf.common import child, scrape, servers
from tests.perf.poller_bench import seed


def owners(redis: Redis, ids: list[str]) -> list[str | None]:
    tokens = redis.mget([keys.lease(sid) for sid in ids])  # type: ignore[arg-type]
    return [t.decode().split(":", 1)[1] if t else None for t in tokens]


def wait_all(redis: Redis, ids: list[str], replica: str, timeout: float = 60) -> float:
    """Seconds until `replica` holds every lease."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(owner == replica for owner in owners(redis, ids)):
            return time.monotonic() - start
        time.sleep(0.005)
    raise SystemExit(f"{replica} did not take over every session within {timeout} s")


EVENTS_POLL_S = 2.0  # POLL_INTERVAL_EVENTS_MS


def wait_up(redis: Redis, replica: str, timeout: float = 30) -> None:
    """Until the replica's first heartbeat: a process just spawned is still importing."""
    start = time.monotonic()
    while redis.zscore(keys.POLLERS, replica) is None:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{replica} did not start within {timeout} s")
        time.sleep(0.01)


def poller(stack_env: dict[str, str], name: str, stack: ExitStack) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**stack_env, "POLLER_ID": name, "POLLER_METRICS_PORT": str(port)}
    return stack.enter_context(child("poller", env=env, port=port)), port


def caught_up(port: int, sessions: int, timeout: float = 120) -> float:
    """Seconds until the replica polls at 90 % of the rate its sessions' cadence needs, over the last second."""
    need = 0.9 * sessions / EVENTS_POLL_S
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    while (now := time.monotonic()) - start < timeout:
        samples.append((now, scrape(port).get("poller_polls_total{server=default}", 0.0)))
        earlier = [sample for sample in samples if now - sample[0] >= 1.0]
        if earlier and (samples[-1][1] - earlier[-1][1]) / (now - earlier[-1][0]) >= need:
            return now - start
        time.sleep(0.1)
    raise SystemExit(f"the replica did not poll its {sessions} sessions on their cadence within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--lease-ttl-ms", type=int, default=5000)
    parser.add_argument("--poll-ms", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kills, terms, catch_ups = [], [], []
    jitter = random.Random(6)
    with servers() as s:
        redis = Redis.from_url(s.redis_url)
        ids = [f"ses_load{i:022d}" for i in range(args.sessions)]
        load_port = free_port()
        env = {
            "REDIS_URL": s.redis_url,
            "DATABASE_URL": s.database_url,
            "OPENCODE_URL": f"http://127.0.0.1:{load_port}",
            "LEASE_TTL_MS": str(args.lease_ttl_ms),
            "POLL_INTERVAL_MS": str(args.poll_ms),
            "MAX_SESSIONS_PER_POLLER": str(max(500, args.sessions)),  # one replica holds them all
            "OPENCODE_EVENTS": "on",
            "POLL_INTERVAL_EVENTS_MS": str(int(EVENTS_POLL_S * 1000)),
            "ORPHANED_RUN_GRACE_MS": "3600000",  # the load's runs never end: they must not be ended as orphaned
            "LOG_LEVEL": "warning",
        }
        with child("tests.perf.load_opencode", "--port", str(load_port), port=load_port):
            for round_ in range(args.rounds):
                for stop, results in ((signal.SIGKILL, kills), (signal.SIGTERM, terms)):
                    anyio.run(seed, s.redis_url, args.sessions)  # fresh jobs: every round starts clean
                    with ExitStack() as stack:
                        first, first_port = poller(env, f"first{round_}{stop}", stack)
                        wait_all(redis, ids, f"first{round_}{stop}")
                        caught_up(first_port, args.sessions)  # it holds them in steady state, renewing on time
                        _, port = poller(env, f"second{round_}{stop}", stack)
                        wait_up(redis, f"second{round_}{stop}")
                        # the second replica is up, idle; the stop falls anywhere between two lease renewals of
                        # the first and two ticks of the second (a fixed wait would measure one phase of them)
                        time.sleep(1.0 + jitter.uniform(0, args.lease_ttl_ms / 3000))
                        first.send_signal(stop)
                        results.append(wait_all(redis, ids, f"second{round_}{stop}"))
                        catch_ups.append(caught_up(port, args.sessions))
    ttl = args.lease_ttl_ms / 1000
    print(
        f"P6 takeover after kill -9 of the replica holding {args.sessions} sessions: "
        f"max {max(kills):.2f} s, runs {', '.join(f'{k:.2f}' for k in kills)} "
        f"(goal <= lease TTL {ttl:g} s + one poll {args.poll_ms / 1000:g} s)"
    )
    print(
        f"P6 takeover after SIGTERM: max {max(terms):.2f} s, runs {', '.join(f'{t:.2f}' for t in terms)} (goal <= 1 s)"
    )
    print(
        f"P6 catch-up: every session polled on its {EVENTS_POLL_S:g} s cadence again, after the takeover: "
        f"max {max(catch_ups):.2f} s, runs {', '.join(f'{c:.2f}' for c in catch_ups)}"
    )


if __name__ == "__main__":
    main()
