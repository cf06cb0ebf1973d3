"""Back and Forward in Chromium with its back/forward cache on (Playwright turns it off by default): a page
restored from the cache opens again what it closed on leaving, so it goes on following the session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import commands
from tests.browser.conftest import CHROMIUM_ARGS, EXPECT_TIMEOUT_MS, chromium_path

pytestmark = pytest.mark.anyio

# Whether the page now shown came from the back/forward cache (else the test would prove nothing).
RESTORED = "addEventListener('pageshow', (event) => { window.__restored = event.persisted; })"


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture
async def cached_page() -> AsyncIterator[Any]:
    """A page of a Chromium whose back/forward cache is on; uncaught page errors fail the test."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine: run .ci/browser-deps (as root: apt-get install chromium)")
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, ignore_default_args=["--disable-back-forward-cache"]
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(EXPECT_TIMEOUT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.add_init_script(RESTORED)
            yield page
        finally:
            await browser.close()
    assert not errors


async def back(page: Any, forward: bool = False) -> None:
    await (page.go_forward if forward else page.go_back)(wait_until="commit")
    assert await page.evaluate("window.__restored") is True, "not restored from the back/forward cache"


async def test_pages_restored_from_the_back_forward_cache_follow_the_session_again(
    cached_page, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    """Was: each page closed its stream on leaving and never reopened it: back on a running session, its page
    showed it running, "Live", for good; the list and the ticket page stood still too."""
    page = cached_page
    await make_worker(opencode_url=watch_sim, opencode_events=False)
    gateway = gateway_process().url
    await page.goto(f"{gateway}/ui/")
    await expect(page.get_by_test_id("live-connection")).to_contain_text("Live")

    state = await commands.enqueue(redis, db, watch_oc, session_type="ask", ticket_id="T-BACK", prompt="a TOOL SLOW")
    sid = state["sessionId"]
    await page.get_by_test_id("live-list").locator(f"li[data-session-id='{sid}'] a.sid").click()
    await expect(page.get_by_test_id("tool-call")).to_have_attribute("data-tool-status", "running")
    await page.goto(f"{gateway}/ui/tickets/T-BACK")
    await expect(page.get_by_test_id("active-session").get_by_test_id("session-status")).to_have_text("running")

    await back(page)  # the session page, left while the tool ran
    await expect(page.get_by_test_id("session-status")).to_have_text("completed")
    await expect(page.get_by_test_id("live-indicator")).to_have_text("Archived")

    await back(page, forward=True)  # the ticket page: the run it showed active is in its history now
    await expect(page.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}']")).to_be_visible()

    await back(page)
    await back(page)  # the list: the session left the live list for history
    await expect(page.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}']")).to_be_visible()
    await expect(page.get_by_test_id("live-list").locator(f"li[data-session-id='{sid}']")).to_have_count(0)
