"""P1: latency from a change in OpenCode to its receipt by an SSE client, with the event stream on and off.

    python -m tests.perf.latency_bench [--sessions 20] [--change-ms 1000] [--duration 20]

The load OpenCode (its own process) adds a part stamped with the time to one session after another, each
session once per `--change-ms`, in its message list and on `/event` at the same moment. A poller and the
gateway run as processes; one SSE client per session (the load generator, its own process) takes receipt
time minus stamp.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import anyio

from shared.dev.processes import free_port
from tests.perf.common import child, servers
from tests.perf.poller_bench import seed
from tests.perf.procstat import percentile, usage


def measure(events: str, sessions: int, change_ms: int, duration: float) -> None:
    with servers() as stack:
        anyio.run(seed, stack.redis_url, sessions)
        load_port, gateway_port = free_port(), free_port()
        env = {
            "REDIS_URL": stack.redis_url,
            "DATABASE_URL": stack.database_url,
            "LOG_LEVEL": "warning",
            "OPENCODE_URL": f"http://127.0.0.1:{load_port}",
            "OPENCODE_EVENTS": events,
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_AUTH": "off",
        }
        ids = [f"ses_load{i:022d}" for i in range(sessions)]
        with (
            child(
                "tests.perf.load_opencode", "--port", str(load_port), "--change-ms", str(change_ms), port=load_port
            ) as load,
            child("poller", env=env) as poller,
            child("gateway", env=env, port=gateway_port) as gateway,
        ):
            time.sleep(3)  # the poller claims and mirrors every session
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.perf.sse_load",
                    "--port",
                    str(gateway_port),
                    "--sessions",
                    ",".join(ids),
                    "--clients",
                    str(sessions),
                    "--duration",
                    str(duration),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdin is not None and client.stdout is not None
            json.loads(client.stdout.readline())
            before = {
                name: usage(p.pid).cpu_s for name, p in (("poller", poller), ("gateway", gateway), ("load", load))
            }
            client.stdin.write("go\n")
            client.stdin.flush()
            done = json.loads(client.stdout.readline())
            cpu = {
                name: (usage(p.pid).cpu_s - before[name]) / duration
                for name, p in (("poller", poller), ("gateway", gateway), ("load", load))
            }
            client.wait(30)
    latencies = done["latencies_ms"]
    print(
        f"P1 events {events}: {len(latencies)} changes received, latency OpenCode change -> SSE client "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms "
        f"({sessions} sessions, one change each per {change_ms} ms; CPU poller {cpu['poller']:.2f}, "
        f"gateway {cpu['gateway']:.2f}, load OpenCode {cpu['load']:.2f} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--change-ms", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    for events in ("on", "off"):
        measure(events, args.sessions, args.change_ms, args.duration)


if __name__ == "__main__":
    main()
