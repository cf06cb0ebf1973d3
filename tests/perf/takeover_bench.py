"""P6: how long a replica's sessions stay unowned after it dies (kill -9) or is stopped (SIGTERM).

    python -m tests.perf.takeover_bench [--sessions 100] [--lease-ttl-ms 5000] [--rounds 3]

Poller A holds every session (sessions served by the stateless load OpenCode, so none ends); poller B runs
beside it with nothing to do. A is killed; the time until B holds every lease is the takeover time. Then the
same with SIGTERM (B stopped, a fresh C takes over). Goal: kill -9 <= lease TTL + one poll; SIGTERM <= 1 s.
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
from tests.perf.common import child, servers
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


def wait_up(redis: Redis, replica: str, timeout: float = 30) -> None:
    """Until the replica's first heartbeat: a process just spawned is still importing."""
    start = time.monotonic()
    while redis.zscore(keys.POLLERS, replica) is None:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{replica} did not start within {timeout} s")
        time.sleep(0.01)


def poller(stack_env: dict[str, str], name: str, stack: ExitStack) -> subprocess.Popen[bytes]:
    return stack.enter_context(child("poller", env={**stack_env, "POLLER_ID": name}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--lease-ttl-ms", type=int, default=5000)
    parser.add_argument("--poll-ms", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kills, terms = [], []
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
            "LOG_LEVEL": "warning",
        }
        with child("tests.perf.load_opencode", "--port", str(load_port), port=load_port):
            for round_ in range(args.rounds):
                for stop, results in ((signal.SIGKILL, kills), (signal.SIGTERM, terms)):
                    anyio.run(seed, s.redis_url, args.sessions)  # fresh jobs: every round starts clean
                    with ExitStack() as stack:
                        first = poller(env, f"first{round_}{stop}", stack)
                        wait_all(redis, ids, f"first{round_}{stop}")
                        poller(env, f"second{round_}{stop}", stack)
                        wait_up(redis, f"second{round_}{stop}")
                        # the second replica is up, idle; the stop falls anywhere between two lease renewals of
                        # the first and two ticks of the second (a fixed wait would measure one phase of them)
                        time.sleep(1.0 + jitter.uniform(0, args.lease_ttl_ms / 3000))
                        first.send_signal(stop)
                        results.append(wait_all(redis, ids, f"second{round_}{stop}"))
    ttl = args.lease_ttl_ms / 1000
    print(
        f"P6 takeover after kill -9 of the replica holding {args.sessions} sessions: "
        f"max {max(kills):.2f} s, runs {', '.join(f'{k:.2f}' for k in kills)} "
        f"(goal <= lease TTL {ttl:g} s + one poll {args.poll_ms / 1000:g} s)"
    )
    print(
        f"P6 takeover after SIGTERM: max {max(terms):.2f} s, runs {', '.join(f'{t:.2f}' for t in terms)} (goal <= 1 s)"
    )


if __name__ == "__main__":
    main()
