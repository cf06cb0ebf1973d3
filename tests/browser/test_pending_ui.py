"""The `/ui` pages with a session waiting for a person: the live list flags it, the session page shows the
command to be run (or the question and its options) and how to answer, then the completed run."""

from __future__ import annotations

from typing import Any

import pytest

from shared import answers, commands
from shared.ids import SessionId
from shared.store.live import read_record
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def waiting_entry(redis: Any, sid: str) -> Any:
    record = await read_record(redis, SessionId(sid))
    return record.state.pending[0] if record is not None and record.state.status == "waiting" else None


async def test_waiting_session_shows_its_request_then_the_completed_run(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    listing = await pages.new()
    await listing.goto(f"{gateway}/ui/")
    await expect(listing.get_by_test_id("live-connection")).to_contain_text("Live")

    tool = await commands.enqueue(redis, db, watch_oc, session_type="ask", prompt="TOOL run", permission=["bash=ask"])
    sid = tool["sessionId"]
    row = listing.get_by_test_id("live-list").locator(f"li[data-session-id='{sid}']")
    await expect(row.get_by_test_id("pending-summary")).to_contain_text("echo hello")
    await expect(row.locator(".status")).to_have_text("waiting")

    view = await pages.new(context=listing.context)
    await view.goto(f"{gateway}/ui/sessions/{sid}")
    request = view.get_by_test_id("pending-request")
    await expect(view.get_by_test_id("session-status")).to_have_text("waiting")
    await expect(request.get_by_test_id("pending-command")).to_have_text("bash: echo hello")
    entry = await wait_for(lambda: waiting_entry(redis, sid), timeout=20)
    await expect(request.get_by_test_id("pending-answer")).to_contain_text(
        f"opencode-sessions reply {sid} {entry['id']}"
    )
    await view.locator("body").screenshot(path=screenshot_path("session-view-waiting.png"))

    await answers.reply(redis, db, sid, entry["id"], "once", by="browser-test")
    await expect(view.get_by_test_id("session-status")).to_have_text("completed", timeout=30_000)
    await expect(view.get_by_test_id("pending")).to_be_hidden()
    await expect(view.get_by_test_id("tool-call")).to_have_attribute("data-tool-status", "completed")

    question = await commands.enqueue(redis, db, watch_oc, session_type="ask", prompt="QUESTION pick")
    await view.goto(f"{gateway}/ui/sessions/{question['sessionId']}")
    await expect(view.get_by_test_id("pending-question")).to_contain_text("Which color should the button be?")
    await expect(view.get_by_test_id("pending-option")).to_have_count(2)
    await expect(view.get_by_test_id("pending-answer")).to_contain_text("--choice LABEL")
