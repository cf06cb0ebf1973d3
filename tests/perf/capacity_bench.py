"""P2 with the event stream on and off: how many sessions one poller process holds with fresh state.

    python -m tests.perf.capacity_bench [--sessions 1000,2000,4000,8000] [--events on,off] [--duration 15]
    python -m tests.perf.capacity_bench --scaling 1,2,4 [--per-replica 1000] [--events on,off]

The load OpenCode (its own process, captured shapes, `--messages` of history per session) adds a stamped part to
every session once per `--change-ms`, in its list and on `GET /event`. One poller process holds the sessions.
Measured where it matters:
- change → Redis: this process subscribes to every session's update channel and takes receipt time minus the
  part's stamp (goal p99 < 100 ms with events on; polling alone is bounded by its cadence);
- the reconciling poll: the time between two fetches of one session's list, as the load OpenCode sees it (goal:
  p99 within 100 ms of the cadence — POLL_INTERVAL_EVENTS_MS with events on, POLL_INTERVAL_MS without).
Also every process's CPU. Goals: ≥ 8,000 sessions per process with events on, ≥ 2,000 polling only.
`--scaling`: one Redis, 1 → 2 → 4 poller processes of `--per-replica` sessions each: Redis CPU and commands per
second per 1,000 sessions, the slope that says how many sessions one Redis carries.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import urllib.request
from contextlib import ExitStack

import anyio
from redis.asyncio import Redis

from poller.session_mirror import FULL_POLL_EVERY
from shared.dev.processes import free_port
from tests.perf.common import Stack, child, histogram_quantile, logged, scrape, servers, wait_started
from tests.perf.poller_bench import seed
from tests.perf.procstat import machine, percentile, usage

STAMP = re.compile(rb'\\?"t\\?":\s?(\d+)')  # {"t": N} inside a part's text, JSON-escaped in the event
CADENCE_MS = {"on": 2000.0, "off": 500.0}  # POLL_INTERVAL_EVENTS_MS, POLL_INTERVAL_MS (the defaults)
SESSION_GOALS = {"on": 8000, "off": 2000}


async def listen(redis_url: str, duration: float) -> list[tuple[float, float]]:
    """(arrival s into the window, change → Redis latency ms) of every stamped part published during `duration`."""
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.psubscribe("opencode:updates:*")
    arrivals: list[tuple[float, float]] = []
    started = time.time_ns()
    with anyio.move_on_after(duration):
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] not in ("pmessage", b"pmessage"):
                continue
            now = time.time_ns()
            arrivals.extend(
                ((now - started) / 1e9, (now - int(m.group(1))) / 1e6) for m in STAMP.finditer(message["data"])
            )
    await pubsub.aclose()
    await redis.aclose()
    return arrivals


def slow_bursts(arrivals: list[tuple[float, float]], over_ms: float = 50.0, top: int = 5) -> str:
    """The 100 ms stretches of the window where most changes took over `over_ms`: bursts that recur at a period
    point at the replica's periodic work (a lease renewal every LEASE_TTL_MS / 3 once showed as bursts 5 s apart)."""
    bursts: dict[float, list[float]] = {}
    for at, latency in arrivals:
        if latency > over_ms:
            bursts.setdefault(round(at, 1), []).append(latency)
    worst = sorted(bursts.items(), key=lambda item: -len(item[1]))[:top]
    listed = ", ".join(f"{at:.1f} s: {len(lat)} (max {max(lat):.0f} ms)" for at, lat in sorted(worst))
    return f"changes over {over_ms:.0f} ms, most at: {listed}" if worst else f"no change over {over_ms:.0f} ms"


def gaps(port: int, *, forget: bool = False) -> tuple[list[float], int]:
    """The list-fetch gaps since the last call, and how many fetches took the whole list; with `forget` they are
    only dropped (none is encoded or returned)."""
    query = "?forget" if forget else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__load/gaps{query}", timeout=30) as response:
        body = json.loads(response.read())
    return list(body.get("gaps_ms", [])), int(body.get("whole", 0))


def measure(stack: Stack, events: str, sessions: int, messages: int, change_ms: int, duration: float) -> None:
    anyio.run(seed, stack.redis_url, sessions)
    load_port, metrics_port = free_port(), free_port()
    env = {
        "REDIS_URL": stack.redis_url,
        "DATABASE_URL": stack.database_url,
        "OPENCODE_URL": f"http://127.0.0.1:{load_port}",
        "OPENCODE_EVENTS": events,
        "POLLER_METRICS_PORT": str(metrics_port),
        "MAX_SESSIONS_PER_POLLER": str(sessions),
        "LEASE_TTL_MS": "15000",
        "ORPHANED_RUN_GRACE_MS": "3600000",  # the load's runs never end: they must not be ended as orphaned
        "LOG_LEVEL": "warning",
    }
    load_args = ("--port", str(load_port), "--messages", str(messages), "--change-ms", str(change_ms))
    with (
        tempfile.TemporaryFile(mode="a+b") as log,  # appended to: reading it moves no offset the poller writes at
        child("tests.perf.load_opencode", *load_args, port=load_port) as load,
        child("poller", env=env, port=metrics_port, stderr=log) as poller,
    ):
        wait_started([metrics_port], sessions, timeout=180)
        time.sleep(5)  # warm-up
        gaps(load_port, forget=True)  # the warm-up's
        cpu = {name: usage(pid).cpu_s for name, pid in (("poller", poller.pid), ("load", load.pid))}
        cpu["redis"] = usage(stack.redis_pid).cpu_s
        whole_machine = machine()
        metrics_before = scrape(metrics_port)
        arrivals = anyio.run(listen, stack.redis_url, duration)
        latencies = [latency for _, latency in arrivals]
        metrics_after = scrape(metrics_port)
        tick_lag_p99 = histogram_quantile(metrics_before, metrics_after, "poller_tick_lag_seconds", 0.99)
        fetch_gaps, whole = gaps(load_port)
        cores = {
            name: (usage(pid).cpu_s - cpu[name]) / duration
            for name, pid in (("poller", poller.pid), ("load", load.pid), ("redis", stack.redis_pid))
        }
        busy = machine().since(whole_machine, duration)
        held = scrape(metrics_port).get("poller_sessions_held{}", 0)
        poller_logged = logged(log)
    change_p99 = percentile(latencies, 99) if latencies else float("inf")
    gap_p99 = percentile(fetch_gaps, 99) if fetch_gaps else float("inf")
    fresh = change_p99 < 100 if events == "on" else True
    on_time = gap_p99 < CADENCE_MS[events] + 100
    met = held >= sessions and fresh and on_time
    print(
        f"P2 events {events}, sessions={sessions} held={held:.0f}: change -> Redis p50 "
        f"{percentile(latencies, 50) if latencies else float('nan'):.1f} ms, p99 {change_p99:.1f} ms "
        f"({len(latencies)} changes); list fetch gap p50 {percentile(fetch_gaps, 50) if fetch_gaps else 0:.0f} ms, "
        f"p99 {gap_p99:.0f} ms (cadence {CADENCE_MS[events]:.0f} ms), {whole_lists(whole, len(fetch_gaps))}; "
        f"tick lag p99 <= {tick_lag_p99 * 1000:.0f} ms; CPU poller {cores['poller']:.2f}, "
        f"load OpenCode {cores['load']:.2f}, Redis {cores['redis']:.2f} cores ({busy}) — "
        f"{'held with fresh state' if met else 'NOT held'} (goal >= {SESSION_GOALS[events]:,} sessions); "
        f"{collections(metrics_before, metrics_after)}; the poller logged (LOG_LEVEL=warning) {poller_logged}"
        # polling alone, every change waits for its poll: only with events on do slow changes point at something
        f"{'; ' + slow_bursts(arrivals) if events == 'on' else ''}"
    )


def whole_lists(whole: int, fetches: int) -> str:
    """How many of the window's fetches took the whole list, against the steady state's share: a window that
    holds far fewer is not the steady state (sessions started together once took theirs together, every 20th
    poll, and a 15 s window could fall between two such bursts)."""
    share = whole / fetches if fetches else 0.0
    return f"{whole} whole lists ({share:.1%} of fetches; steady state {1 / FULL_POLL_EVERY:.0%})"


def collections(before: dict[str, float], after: dict[str, float]) -> str:
    """The poller's collector pauses during the window, by generation: each one stopped every session."""

    def grown(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    out = []
    for generation, name in enumerate(("young", "middle", "old")):
        count = grown(f"poller_gc_pause_seconds_count{{generation={generation}}}")
        total = grown(f"poller_gc_pause_seconds_sum{{generation={generation}}}")
        out.append(f"{name} {count:.0f} ({total * 1000:.0f} ms)")
    return "collections " + ", ".join(out)


def scale(
    stack: Stack, events: str, replicas: int, per_replica: int, messages: int, change_ms: int, duration: float
) -> tuple[float, float, float]:
    """Sessions held, Redis cores and Redis commands/s with `replicas` poller processes on one Redis."""
    sessions = replicas * per_replica
    anyio.run(seed, stack.redis_url, sessions)
    load_port = free_port()
    metrics_ports = [free_port() for _ in range(replicas)]
    env = {
        "REDIS_URL": stack.redis_url,
        "DATABASE_URL": stack.database_url,
        "OPENCODE_URL": f"http://127.0.0.1:{load_port}",
        "OPENCODE_EVENTS": events,
        "MAX_SESSIONS_PER_POLLER": str(per_replica),
        "LEASE_TTL_MS": "15000",
        "ORPHANED_RUN_GRACE_MS": "3600000",
        "LOG_LEVEL": "warning",
    }
    load_args = ("--port", str(load_port), "--messages", str(messages), "--change-ms", str(change_ms))
    with ExitStack() as stack_of_children:
        stack_of_children.enter_context(child("tests.perf.load_opencode", *load_args, port=load_port))
        pollers = [
            stack_of_children.enter_context(child("poller", env={**env, "POLLER_METRICS_PORT": str(port)}, port=port))
            for port in metrics_ports
        ]
        wait_started(metrics_ports, sessions, timeout=180)
        time.sleep(5)
        held = sum(scrape(p).get("poller_sessions_held{}", 0) for p in metrics_ports)
        commands, cpu = anyio.run(_commands, stack.redis_url), usage(stack.redis_pid).cpu_s
        poller_cpu = sum(usage(p.pid).cpu_s for p in pollers)
        time.sleep(duration)
        commands = (anyio.run(_commands, stack.redis_url) - commands) / duration
        cores = (usage(stack.redis_pid).cpu_s - cpu) / duration
        poller_cores = (sum(usage(p.pid).cpu_s for p in pollers) - poller_cpu) / duration
    per_1000 = 1000 / max(held, 1)
    print(
        f"P2 scaling, events {events}: {replicas} poller(s) x {per_replica} = {held:.0f} sessions held on one Redis: "
        f"Redis {cores:.3f} cores ({cores * per_1000:.3f} per 1,000 sessions), {commands:.0f} commands/s "
        f"({commands * per_1000:.0f} per 1,000 sessions); pollers {poller_cores:.2f} cores in all"
    )
    return held, cores, commands


def extrapolate(events: str, runs: list[tuple[float, float, float]]) -> None:
    """What one Redis core carries, from the dearest run per session (a run whose pollers were CPU-bound sends
    less per session than a real deployment would, so the cheapest run would flatter Redis)."""
    measured = [(held, cores, commands) for held, cores, commands in runs if held > 0]
    if not measured:
        return
    cores_per_1000 = max(cores / held * 1000 for held, cores, _ in measured)
    commands_per_1000 = max(commands / held * 1000 for held, _, commands in measured)
    carried = f"~{1000 / cores_per_1000:,.0f}" if cores_per_1000 > 0 else "more than measurable"
    print(
        f"P2 scaling, events {events}: at most {cores_per_1000:.3f} Redis cores and {commands_per_1000:.0f} "
        f"commands/s per 1,000 sessions: one Redis core carries {carried} sessions (extrapolated, linear)"
    )


async def _commands(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return int((await redis.info("stats"))["total_commands_processed"])
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1000,2000,4000,8000")
    parser.add_argument("--events", default="on,off")
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--change-ms", type=int, default=5000, help="each session changes once per this")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--scaling", default="", help="poller process counts, e.g. 1,2,4 (instead of --sessions)")
    parser.add_argument("--per-replica", type=int, default=1000)
    args = parser.parse_args()
    with servers() as stack:
        if args.scaling:
            for events in args.events.split(","):
                runs = [
                    scale(stack, events, replicas, args.per_replica, args.messages, args.change_ms, args.duration)
                    for replicas in (int(c) for c in args.scaling.split(","))
                ]
                extrapolate(events, runs)
            return
        for events in args.events.split(","):
            for count in (int(c) for c in args.sessions.split(",")):
                measure(stack, events, count, args.messages, args.change_ms, args.duration)


if __name__ == "__main__":
    main()
