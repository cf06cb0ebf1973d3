"""The replica's heartbeat: who it is and what it holds and serves, written every HEARTBEAT_INTERVAL_S. `status`
lists it, claim.lua counts the replicas whose heartbeat is recent for the fair share, places.served_elsewhere
reads which servers the others have, and server_urls which URL each gives them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from shared.models import as_text, dumps
from shared.store import keys
from shared.store.connections import store_errors

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TTL_FACTOR = 5  # the record outlives a few missed beats, not a replica gone for good


async def beat(
    redis: Redis,
    replica_id: str,
    *,
    started_ms: int,
    now_ms: int,
    sessions: Iterable[str],
    max_sessions: int,
    servers: Iterable[str],
    server_urls: Mapping[str, str] | None = None,
) -> None:
    """One heartbeat: the replica's record and its place in the list of replicas, in one transaction."""
    name = keys.poller(replica_id)
    with store_errors("Redis"):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                name,
                mapping={
                    "replicaId": replica_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "startedAt": started_ms,
                    "heartbeatAt": now_ms,
                    "sessions": dumps(sorted(sessions)),
                    "maxSessions": max_sessions,
                    "servers": dumps(list(servers)),  # see places.served_elsewhere
                    "serverUrls": dumps(dict(server_urls or {})),  # name -> URL without credentials: server_urls
                },
            )
            pipe.pexpire(name, int(HEARTBEAT_TTL_FACTOR * HEARTBEAT_INTERVAL_S * 1000))
            pipe.zadd(keys.POLLERS, {replica_id: now_ms})
            await pipe.execute()


async def others_say(redis: Redis, replica_id: str, since_ms: int, field: str) -> dict[str, bytes | None]:
    """One field of the heartbeat of every other replica that beat since `since_ms`, by replica (None where its
    heartbeat lacks it: a replica from before the field)."""
    with store_errors("Redis"):
        live = [as_text(r) for r in await redis.zrangebyscore(keys.POLLERS, since_ms, "+inf")]
        others = [replica for replica in live if replica != replica_id]
        async with redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.hget(keys.poller(other), field)
            said = await pipe.execute()
    return dict(zip(others, said, strict=True))
