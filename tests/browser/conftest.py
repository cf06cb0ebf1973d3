"""Browser fixtures: Debian's Chromium driven by Playwright's async API, and the gateway as a process.

Chromium comes from the system (`.ci/browser-deps` installs Debian's `chromium` and `chromium-driver`); no
browser build is ever downloaded (`playwright install` is never run). Without it these tests skip, saying why.
The gateway runs as `python -m gateway` on a fixed loopback port so a test can kill and restart it under an
open page; pollers run in-process (`make_worker`) against an OpenCode simulator slow enough to watch.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from shared.dev.processes import free_port
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from tests.helpers import ARTIFACTS, Child, wait_port

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
EXPECT_TIMEOUT_MS = 20_000
WATCH_SPEED = 2.0  # simulator speed for sessions a test watches: TOOL SLOW runs ~6 s, each state visible > 0.5 s


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM")
    for candidate in (configured, *CHROMIUM_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the browser tests (its launch costs ~0.8 s); each page gets a fresh context (`Pages`), so
    no cookie, storage or cache passes from one test to the next. Package scope, not session: while an async
    fixture lives, anyio runs every test in its one event loop, and the tests after these get a loop of their own
    again (a callback left by an earlier test, firing later, freed a gateway in another test's garbage check)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine: run .ci/browser-deps (as root: apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.skip("the playwright package is missing: bash .ci/install dev deploy")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Pages:
    """New pages in one browser context (one tab's sessionStorage each); uncaught page errors fail the test."""

    browser: Any
    contexts: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def new(self, *, context: Any = None, **options: Any) -> Any:
        """A page in `context`, else in a new context (light, 1100 by 900, unless `options` say otherwise)."""
        if context is None:
            options = {"viewport": {"width": 1100, "height": 900}, "color_scheme": "light", **options}
            context = await self.browser.new_context(**options)
            self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(EXPECT_TIMEOUT_MS)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        return page


@pytest.fixture
async def pages(browser: Any) -> AsyncIterator[Pages]:
    held = Pages(browser)
    yield held
    for context in held.contexts:
        await context.close()
    assert not held.errors, f"uncaught errors in the page: {held.errors}"


class GatewayProcess:
    """`python -m gateway` on one port, which stays the same across stop() and start()."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**env, "GATEWAY_PORT": str(self.port), "GATEWAY_HOST": "127.0.0.1"}
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> str:
        assert self.child is None or not self.child.alive(), "already running"
        self.starts += 1
        self.child = Child(f"gateway-{self.starts}", "gateway", [], self._env)
        wait_port(self.port, child=self.child)
        response = httpx.get(f"{self.url}/readyz", timeout=10)
        assert response.status_code == 200, response.text
        return self.url

    def kill(self) -> None:
        """Gone at once, every open stream reset mid-flight (what a crash or a dropped connection looks like)."""
        assert self.child is not None
        self.child.kill()
        self.child.close()

    def stop(self) -> None:
        assert self.child is not None
        self.child.signal(signal.SIGTERM)
        self.child.proc.wait(15)
        self.child.close()

    def close(self) -> None:
        if self.child is not None:
            self.child.close()


@pytest.fixture
def gateway_process(redis_url: str, schema: str) -> Iterator[Callable[..., GatewayProcess]]:
    """`gw = gateway_process(secret=None)`; `gw.start()` returns its URL. Auth is on when a secret is given."""
    started: list[GatewayProcess] = []

    def make(secret: str | None = None) -> GatewayProcess:
        env = {
            "REDIS_URL": redis_url,
            "DATABASE_URL": schema,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            **({"GATEWAY_AUTH_SECRET": secret} if secret else {"GATEWAY_AUTH": "off"}),
        }
        gateway = GatewayProcess(env)
        started.append(gateway)
        gateway.start()
        return gateway

    yield make
    for gateway in started:
        gateway.close()


@pytest.fixture
def watch_sim() -> Iterator[str]:
    """An OpenCode simulator slow enough to watch each step in a browser."""
    with serve_in_thread(create_simulator(WATCH_SPEED, retry_delays=(0.2, 0.2))) as url:
        yield url


@pytest.fixture
async def watch_oc(watch_sim: str) -> AsyncIterator[OpenCodeClient]:
    async with OpenCodeClient(watch_sim, timeout_s=5) as client:
        yield client


@pytest.fixture
def screenshot_path() -> Callable[[str], str]:
    def path(name: str) -> str:
        ARTIFACTS.mkdir(exist_ok=True)
        return str(ARTIFACTS / name)

    return path
