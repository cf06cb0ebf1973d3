"""A simulated server per test module (fast retries and heartbeats, or one retry that never comes) and a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread

SPEED = 2.0


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_in_thread(create_simulator(SPEED, retry_delays=(0.1, 0.1, 0.1), heartbeat_s=0.3)) as url:
        yield url


@pytest.fixture(scope="module")
def slow_retry_url() -> Iterator[str]:
    with serve_in_thread(create_simulator(SPEED, retry_delays=(60.0,))) as url:
        yield url


@pytest.fixture
async def http(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, timeout=20) as client:
        yield client
