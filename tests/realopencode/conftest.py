"""Fixtures for the real-server tests: the installed `opencode`, a running `opencode serve` (with its scripted
model) shared by the modules that leave it running, and `run_scenario`, which runs one scenario end to end through
our CLI and two pollers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.helpers import Child
from tests.realopencode.endtoend import RunScenario, scenario_runner
from tests.realopencode.harness import NpmMissing, RealOpenCode, install_opencode, opencode_version, run_opencode
from tests.realopencode.scripted_model import serve_scripted_model


@pytest.fixture(scope="session")
def opencode_binary() -> Path:
    """The pinned opencode-ai (or OPENCODE_VERSION), installed with npm into the user's cache on first use."""
    try:
        return install_opencode(opencode_version())
    except NpmMissing as exc:
        pytest.skip(f"needs npm to install opencode-ai: {exc}")


def serve_real_opencode(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOpenCode]:
    """`opencode serve` on a free loopback port: isolated HOME/XDG dirs, a git work dir holding hello.txt, offline
    but for the scripted model (its provider), which is served from this process."""
    root = tmp_path_factory.mktemp("opencode")
    with (
        serve_scripted_model() as model,
        run_opencode(binary, root, model.url, version=opencode_version()) as server,
    ):
        yield RealOpenCode(server, model)
        if server.process.poll() is not None:
            pytest.fail(f"opencode serve died during the tests:\n{server.log_tail()}")


@pytest.fixture(scope="package")
def real_opencode(opencode_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOpenCode]:
    """One server for every module here that leaves it running (each test works in sessions of its own), so its
    start (~4 s) is paid once; a module that stops or restarts it overrides this with `own_real_opencode`."""
    yield from serve_real_opencode(opencode_binary, tmp_path_factory)


@pytest.fixture(scope="module")
def own_real_opencode(opencode_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOpenCode]:
    """A server for one module alone."""
    yield from serve_real_opencode(opencode_binary, tmp_path_factory)


@pytest.fixture
def run_scenario(redis: Redis, db: Any, make_poller: Callable[..., Child], redis_url: str, schema: str) -> RunScenario:
    """`await run_scenario(scenario, opencode_url)`: see `tests.realopencode.endtoend.scenario_runner`."""
    return scenario_runner(redis, db, make_poller, redis_url=redis_url, database_url=schema)
