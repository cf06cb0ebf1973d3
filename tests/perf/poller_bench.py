"""P2: active sessions one poller process keeps at a 500 ms cadence, tick lag p99, CPU per 1,000 sessions.

    python -m tests.perf.poller_bench [--sessions 500,1000,2000,3000] [--messages 30] [--duration 15]

For each count: a fresh poller process (polling alone, OPENCODE_EVENTS=off) claims that many live sessions
served by the stateless load OpenCode (its own process, tests/perf/load_opencode.py); after a warm-up the
poller's own metrics give the poll rate and the tick lag, /proc gives each process's CPU.
"""

from __future__ import annotations

import argparse
import time

import anyio
from redis.asyncio import Redis

from shared.dev.processes import free_port
from shared.ids import SessionId
from shared.store.live import LiveState
from shared.store.lua import Scripts
from tests.perf.common import Stack, child, histogram_quantile, scrape, servers, wait_started
from tests.perf.procstat import usage


async def seed(redis_url: str, count: int) -> None:
    redis = Redis.from_url(redis_url)
    await redis.flushall()
    scripts = Scripts(redis)
    for i in range(count):
        sid = SessionId(f"ses_load{i:022d}")
        state = LiveState(session_id=sid, session_type="chat", status="running", started_at=1)
        await scripts.enqueue(
            sid,
            None,
            job={"sessionId": sid, "epoch": "0"},
            state=state.encode(),
            prompts=[],
            index_event=state.index_event("appeared"),
        )
    await redis.aclose()


def measure(stack: Stack, sessions: int, messages: int, duration: float) -> None:
    anyio.run(seed, stack.redis_url, sessions)
    load_port, metrics_port = free_port(), free_port()
    env = {
        "REDIS_URL": stack.redis_url,
        "DATABASE_URL": stack.database_url,
        "OPENCODE_URL": f"http://127.0.0.1:{load_port}",
        "OPENCODE_EVENTS": "off",
        "POLLER_METRICS_PORT": str(metrics_port),
        "MAX_SESSIONS_PER_POLLER": str(sessions),
        "LEASE_TTL_MS": "15000",
        "ORPHANED_RUN_GRACE_MS": "3600000",  # the load's runs never end: they must not be ended as orphaned
        "LOG_LEVEL": "warning",
    }
    with (
        child(
            "tests.perf.load_opencode", "--port", str(load_port), "--messages", str(messages), port=load_port
        ) as load,
        child("poller", env=env, port=metrics_port) as poller,
    ):
        wait_started([metrics_port], sessions, timeout=180)
        time.sleep(5)  # warm-up
        before, cpu_poller, cpu_load, cpu_redis = (
            scrape(metrics_port),
            usage(poller.pid),
            usage(load.pid),
            usage(stack.redis_pid),
        )
        time.sleep(duration)
        after = scrape(metrics_port)
        poller_cores = (usage(poller.pid).cpu_s - cpu_poller.cpu_s) / duration
        load_cores = (usage(load.pid).cpu_s - cpu_load.cpu_s) / duration
        redis_cores = (usage(stack.redis_pid).cpu_s - cpu_redis.cpu_s) / duration
    polls = (after["poller_polls_total{server=default}"] - before["poller_polls_total{server=default}"]) / duration
    lag_p50 = histogram_quantile(before, after, "poller_tick_lag_seconds", 0.50) * 1000
    lag_p99 = histogram_quantile(before, after, "poller_tick_lag_seconds", 0.99) * 1000
    held = after.get("poller_sessions_held{}", 0)
    lost = after.get("poller_leases_lost_total{server=default}", 0)
    print(
        f"P2 sessions={sessions} held={held:.0f} messages/session={messages}: polls {polls:.0f}/s "
        f"(cadence needs {sessions * 2}/s), tick lag p50 <= {lag_p50:g} ms, p99 <= {lag_p99:g} ms; "
        f"CPU poller {poller_cores:.2f} cores ({poller_cores / sessions * 1000:.2f} per 1,000 sessions), "
        f"load OpenCode {load_cores:.2f}, Redis {redis_cores:.2f}; leases lost so far {lost:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="500,1000,2000,3000")
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    with servers() as stack:
        for count in (int(c) for c in args.sessions.split(",")):
            measure(stack, count, args.messages, args.duration)


if __name__ == "__main__":
    main()
