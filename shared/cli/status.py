"""`opencode-sessions status`: the queue, the live sessions and the poller replicas, as Redis sees them now."""

from __future__ import annotations

from typing import Any

import anyio
import click
from redis.asyncio import Redis

from shared.cli.runtime import clients, run
from shared.cli.terminal import echo, emit_json, one_line
from shared.config import ServerConfig, Settings
from shared.errors import NotFound, SessionLayerError
from shared.models import STATUSES
from shared.opencode.client import OpenCodeClient
from shared.sessions import live_server_counts, live_status_counts, poller_replicas, queue_depth
from shared.store.connections import redis_now_ms

MAX_GONE_SHOWN = 10  # the ZSET keeps every replica id that ever beat; the table shows the latest few
HEALTH_TIMEOUT_S = 2.0


async def _health(server: ServerConfig) -> dict[str, Any]:
    """`GET /global/health` of one server: up (with its version) or not (with why)."""
    async with OpenCodeClient(server.url, timeout_s=HEALTH_TIMEOUT_S, max_connections=1, auth=server.auth) as oc:
        try:
            answer = await oc.health()
        except NotFound as exc:  # no such route: not what OpenCode answers (the message is the body alone)
            return {"healthy": False, "version": None, "error": f"GET /global/health answered 404: {exc.message}"}
        except SessionLayerError as exc:
            return {"healthy": False, "version": None, "error": exc.message}
    return {"healthy": answer.get("healthy") is True, "version": answer.get("version"), "error": None}


async def read_servers(settings: Settings, redis: Redis) -> list[dict[str, Any]]:
    """Each configured OpenCode server with its health and how many live sessions it holds (asked at once)."""
    counts = await live_server_counts(redis)
    health: dict[str, dict[str, Any]] = {}

    async def ask(server: ServerConfig) -> None:
        health[server.name] = await _health(server)

    async with anyio.create_task_group() as tg:
        for server in settings.servers:
            tg.start_soon(ask, server)
    return [
        {"name": s.name, "url": s.url, **health[s.name], "sessions": counts.get(s.name, 0)} for s in settings.servers
    ]


def url_mismatches(pollers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each server the live replicas give different URLs (their heartbeats' `serverUrls`), with each URL and the
    replicas that have it: those replicas ask different OpenCode servers for the same sessions."""
    by_server: dict[str, dict[str, list[str]]] = {}
    for replica in pollers:
        if replica["alive"]:
            for server, url in replica["serverUrls"].items():
                by_server.setdefault(server, {}).setdefault(url, []).append(replica["replicaId"])
    return [
        {"server": server, "urls": {url: sorted(ids) for url, ids in sorted(urls.items())}}
        for server, urls in sorted(by_server.items())
        if len(urls) > 1
    ]


async def read_status() -> dict[str, Any]:
    async with clients(db=False) as c:
        now_ms = await redis_now_ms(c.redis)
        queue = await queue_depth(c.redis, now_ms)
        by_status = await live_status_counts(c.redis)
        replicas = await poller_replicas(c.redis, now_ms)
        servers = await read_servers(c.settings, c.redis)
    return {
        "now": now_ms,
        "queue": queue,
        "live": {"total": sum(by_status.values()), "byStatus": by_status},
        "pollers": replicas,
        "serverUrlMismatches": url_mismatches(replicas),
        "servers": servers,
    }


def age(ms: int) -> str:
    """0.4s, 12s, 3m05s, 2h01m, 3d04h: short enough for a table cell."""
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print {now, queue, live, pollers, serverUrlMismatches, servers} as JSON."
)
def status(as_json: bool) -> None:
    """Show the queue depth (due vs leased), live sessions by status and poller replicas (REDIS_URL).

    A replica is `alive` while its heartbeat hash exists (it beats every second and the hash expires after
    a few missed beats); a stopped or crashed replica is listed as `gone` with the age of its last beat.
    A server that live replicas give different URLs (OPENCODE_SERVERS) is a MISMATCH line naming each URL and its
    replicas (--json: each replica's `serverUrls`, and `serverUrlMismatches`). Last, with OPENCODE_SERVERS, each
    OpenCode server with its health and its live sessions (--json: always).
    """
    report = run(read_status)
    if as_json:
        emit_json(report)
        return
    queue, live, pollers = report["queue"], report["live"], report["pollers"]
    echo(f"queue    {queue['total']} job(s): {queue['due']} due, {queue['leased']} leased")
    order = [s for s in STATUSES if s in live["byStatus"]] + sorted(set(live["byStatus"]) - set(STATUSES))
    statuses = ", ".join(f"{name} {live['byStatus'][name]}" for name in order)
    echo(f"live     {live['total']} session(s)" + (f": {statuses}" if statuses else ""))
    if live["byStatus"].get("waiting"):
        echo(f"waiting  {live['byStatus']['waiting']} session(s) wait for a person (see show / watch)")
    alive = [p for p in pollers if p["alive"]]
    echo(f"pollers  {len(alive)} alive" + (f", {len(pollers) - len(alive)} gone" if len(pollers) > len(alive) else ""))
    gone_shown = 0
    for replica in pollers:
        if not replica["alive"]:
            gone_shown += 1
            if gone_shown > MAX_GONE_SHOWN:
                continue
        held = replica["sessions"]
        capacity = f"/{replica['maxSessions']}" if replica["maxSessions"] else ""
        if replica["alive"]:
            where = f"{replica['host']} pid {replica['pid']}"
            up = f", up {age(report['now'] - replica['startedAt'])}" if replica["startedAt"] else ""
            echo(
                f"  {replica['replicaId']}  alive  {where}  heartbeat {age(replica['heartbeatAgeMs'])} ago{up}"
                f"  {len(held)}{capacity} session(s)"
            )
            for session_id in held:
                echo(f"      {session_id}")
        else:
            echo(f"  {replica['replicaId']}  gone   last heartbeat {age(replica['heartbeatAgeMs'])} ago")
    if gone_shown > MAX_GONE_SHOWN:
        echo(f"  … and {gone_shown - MAX_GONE_SHOWN} more gone (see --json)")
    for mismatch in report["serverUrlMismatches"]:  # what a heartbeat holds: one line each, as the server's
        urls = ", ".join(f"{one_line(url)} ({', '.join(map(one_line, ids))})" for url, ids in mismatch["urls"].items())
        echo(f"  MISMATCH server {one_line(mismatch['server'])} has different URLs on live replicas: {urls}")
    if len(report["servers"]) < 2:
        return  # one server (OPENCODE_URL alone): the report reads as it always did; --json has it
    echo(f"servers  {len(report['servers'])}")
    for server in report["servers"]:
        # the version and the error are what the server said: one line each, or it could print lines of ours
        health = f"up {one_line(server['version'])}" if server["healthy"] else f"down: {one_line(server['error'])}"
        echo(f"  {server['name']}  {server['url']}  {health}  {server['sessions']} session(s)")
