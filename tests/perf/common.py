"""What the benchmarks share: servers, child processes and reading a Prometheus endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import anyio
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from shared.dev.embedded.postgres import start_postgres
from shared.dev.embedded.redis import start_redis
from shared.store.migrate import migrate
from tests.helpers import wait_port


@dataclass
class Stack:
    redis_url: str
    database_url: str
    redis_pid: int


@contextmanager
def servers() -> Iterator[Stack]:
    with start_redis() as redis_server, start_postgres() as pg_server:

        async def go() -> None:
            async with await psycopg.AsyncConnection.connect(pg_server.url, autocommit=True) as conn:
                await migrate(conn)

        anyio.run(go)
        yield Stack(redis_server.url, pg_server.url, redis_server.pid)


@contextmanager
def child(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    stderr: IO[bytes] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m module` with `env` added; its logs go to `stderr` when given, else nowhere."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
    )
    try:
        if port is not None:
            wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def logged(log: IO[bytes]) -> str:
    """What a child logged (structlog's JSON lines, e.g. its warnings), by event: a benchmark that discards a
    process's logs hides its failures (8,000 sessions claimed at once once handed ~700 back, unseen)."""
    log.seek(0)
    events: Counter[str] = Counter()
    for line in log:
        try:
            record = json.loads(line)
        except ValueError:
            events["(not a log line)"] += 1
            continue
        events[f"{record.get('level', '?')} {record.get('event', '?')}"] += 1
    return ", ".join(f"{event} x{count}" for event, count in events.most_common()) or "nothing"


def scrape(port: int) -> dict[str, float]:
    """Samples by name{labels} from a Prometheus text endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def wait_started(ports: list[int], sessions: int, timeout: float) -> float:
    """Until the replicas hold `sessions` between them and every tracker has had its first tick (the claims' start-up
    is over: it reads each record whole and fetches each list whole, work a benchmark of steady state must not
    measure). Returns the sessions held: fewer than asked when the timeout came first."""
    deadline = time.monotonic() + timeout
    while True:
        samples = [scrape(port) for port in ports]
        held = sum(sample.get("poller_sessions_held{}", 0) for sample in samples)
        starting = sum(sample.get("poller_sessions_starting{}", 0) for sample in samples)
        if (held >= sessions and starting == 0) or time.monotonic() > deadline:
            return held
        time.sleep(0.5)


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float:
    """The upper bound of the bucket holding quantile q of the observations between two scrapes."""
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{"):
            bound = key.split("le=", 1)[1].rstrip("}")
            buckets.append((float(bound), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return float("nan")


__all__ = ["Stack", "child", "histogram_quantile", "scrape", "servers"]
