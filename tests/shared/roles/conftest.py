"""A client for each user of deploy/redis-acl.conf, configured like the processes' own (shared.store.connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.store.connections import redis_client
from tests.roles import GATEWAY, POLLER, user_url


@pytest.fixture
async def gateway(acl: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """Configured exactly like the processes' clients (shared.store.connections), so their handshake is what runs."""
    client = redis_client(user_url(redis_url, GATEWAY))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def poller(acl: Redis, redis_url: str) -> AsyncIterator[Redis]:
    client = redis_client(user_url(redis_url, POLLER))
    try:
        yield client
    finally:
        await client.aclose()
