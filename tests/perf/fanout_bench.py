"""P5: SSE clients one gateway process holds on one Redis pub/sub connection, fan-out latency, memory per client.

    python -m tests.perf.fanout_bench [--clients 10000] [--sessions 100] [--rate 20] [--duration 20]

Starts Redis and PostgreSQL (embedded), the gateway and the load generator as processes of their own, creates
live sessions, connects the clients, then publishes `--rate` update events a second (spread over the sessions)
and reports latency from PUBLISH to receipt by a client, the gateway's memory and every process's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import anyio
import psycopg
from redis.asyncio import Redis

from shared.dev.embedded.postgres import start_postgres
from shared.dev.embedded.redis import start_redis
from shared.dev.processes import free_port
from shared.ids import SessionId
from shared.store import keys
from shared.store.live import LiveState
from shared.store.lua import Scripts
from shared.store.migrate import migrate
from tests.helpers import wait_port
from tests.perf.procstat import percentile, raise_fd_limit, usage


def sid(i: int) -> SessionId:
    return SessionId(f"ses_bench{i:022d}")


async def seed(redis: Redis, count: int) -> list[SessionId]:
    scripts = Scripts(redis)
    ids = [sid(i) for i in range(count)]
    for session_id in ids:
        state = LiveState(session_id=session_id, session_type="chat", status="running", started_at=1)
        await scripts.enqueue(
            session_id,
            None,
            job={"sessionId": session_id, "epoch": "0"},
            state=state.encode(),
            prompts=[],
            index_event=state.index_event("appeared"),
        )
        await redis.zrem(keys.QUEUE, session_id)  # no poller in this benchmark: the publisher plays its part
    return ids


async def publish(redis: Redis, ids: list[SessionId], rate: float, duration: float) -> int:
    seqs = dict.fromkeys(ids, 1)
    sent = 0
    interval = 1 / rate
    next_at = time.monotonic()
    end = next_at + duration
    while time.monotonic() < end:
        session_id = ids[sent % len(ids)]
        seqs[session_id] += 1
        body = (
            f'{{"seq":{seqs[session_id]},"type":"update","sessionId":"{session_id}","state":{{"t":{time.time_ns()}}},'
            '"messages":[],"parts":[],"removedMessages":[],"removedParts":[]}'
        )
        await redis.publish(keys.updates(session_id), body)
        await redis.hset(keys.session(session_id), "seq", seqs[session_id])
        sent += 1
        next_at += interval
        await anyio.sleep(max(0.0, next_at - time.monotonic()))
    return sent


async def run(args: argparse.Namespace) -> None:
    raise_fd_limit()
    with start_redis() as redis_server, start_postgres() as pg_server:
        async with await psycopg.AsyncConnection.connect(pg_server.url, autocommit=True) as conn:
            await migrate(conn)
        redis = Redis.from_url(redis_server.url)
        ids = await seed(redis, args.sessions)
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": pg_server.url,
            "GATEWAY_PORT": str(port),
            "GATEWAY_AUTH": "off",
            "LOG_LEVEL": "warning",
        }
        gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, preexec_fn=raise_fd_limit)
        try:
            wait_port(port)
            base = usage(gateway.pid)
            load = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.perf.sse_load",
                    "--port",
                    str(port),
                    "--sessions",
                    ",".join(ids),
                    "--clients",
                    str(args.clients),
                    "--duration",
                    str(args.duration + 2),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert load.stdout is not None and load.stdin is not None
            connected = json.loads(load.stdout.readline())
            held = usage(gateway.pid)
            clients_list = await redis.client_list()
            pubsub_connections = sum(1 for c in clients_list if int(c.get("sub", 0)) > 0)
            load.stdin.write("go\n")
            load.stdin.flush()
            before_gw, before_load = usage(gateway.pid), usage(load.pid)
            sent = await publish(redis, ids, args.rate, args.duration)
            after_gw, after_load = usage(gateway.pid), usage(load.pid)
            done = json.loads(load.stdout.readline())
            load.wait(30)
        finally:
            gateway.terminate()
            gateway.wait(15)
        await redis.aclose()
    latencies = done["latencies_ms"]
    per_session = args.clients / args.sessions
    print(f"P5 clients held by one gateway process: {connected['clients']} (asked {args.clients})")
    print(f"P5 redis pub/sub connections used by the gateway: {pubsub_connections}")
    print(
        f"P5 event rate: {args.rate}/s over {args.sessions} sessions ({per_session:.0f} clients each) "
        f"= {args.rate * per_session:.0f} deliveries/s; events published: {sent}; deliveries: {len(latencies)}"
    )
    print(f"P5 fan-out latency publish->client p50: {percentile(latencies, 50):.1f} ms")
    print(f"P5 fan-out latency publish->client p99: {percentile(latencies, 99):.1f} ms")
    print(
        f"P5 gateway memory per client: {(held.rss_mb - base.rss_mb) * 1024 / max(1, connected['clients']):.1f} KB"
        f" (RSS {base.rss_mb:.0f} MB idle -> {held.rss_mb:.0f} MB with clients)"
    )
    print(
        f"P5 CPU during publishing: gateway {(after_gw.cpu_s - before_gw.cpu_s) / args.duration:.2f} cores,"
        f" load generator {(after_load.cpu_s - before_load.cpu_s) / args.duration:.2f} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="update events per second, all sessions together")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connect-rate", type=int, default=500, help="new SSE connections per second")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
