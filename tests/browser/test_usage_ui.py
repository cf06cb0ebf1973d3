"""The usage lines of the pages in a real browser: a session's usage, and a ticket's total."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import commands
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def ended(gateway: str, sid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
            found = dict((await client.get(f"/sessions/{sid}")).json())
        return found if not found["live"] and found["status"] == "completed" else {}

    return await wait_for(check, timeout=60, interval=0.1, what=f"{sid} archived")


async def test_the_session_page_shows_its_usage_and_the_ticket_page_the_total(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    ids = []
    for prompt in ("TOOL run echo", "ECHO hi"):
        state = await commands.enqueue(redis, db, watch_oc, session_type="chat", ticket_id="T-U", prompt=prompt)
        ids.append(state["sessionId"])
    for sid in ids:
        await ended(gateway, sid)

    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/{ids[0]}")
    await expect(page.get_by_test_id("session-usage-text")).to_have_text(
        "2 steps · 200 in · 40 out · 0 reasoning · cache 0 read / 0 write · cost 0.0000"
    )
    await page.goto(f"{gateway}/ui/tickets/T-U")
    await expect(page.get_by_test_id("ticket-usage-text")).to_have_text(
        "3 steps · 300 in · 60 out · 0 reasoning · cache 0 read / 0 write · cost 0.0000"
    )
