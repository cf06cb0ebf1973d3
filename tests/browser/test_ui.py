"""The sessions pages in a real browser (Debian's Chromium via Playwright) against a real gateway process, an
in-process poller, Redis, PostgreSQL and the OpenCode simulator: live transcripts, the live list moving to
history, resuming after the gateway restarts, the ticket view, filters and auth."""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest

from shared import commands
from shared.tokens import Scope, mint_token
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

SECRET = "browser-test-secret-of-enough-length"
HIDDEN_PARTS = {"step-start", "step-finish", "snapshot"}
DOM_TRANSCRIPT = """(root) => [...root.querySelectorAll(':scope > li')].map((li) => ({
    id: li.dataset.messageId,
    role: li.dataset.role,
    parts: [...li.querySelectorAll('[data-part-id]')].map((p) => [p.dataset.partId, p.dataset.partType]),
    text: [...li.querySelectorAll('.text-body')].map((t) => t.textContent),
    tools: [...li.querySelectorAll('[data-testid=tool-call]')].map((t) => t.dataset.toolStatus),
}))"""


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def session_json(gateway: str, sid: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=gateway, timeout=10, headers=headers) as client:
        response = await client.get(f"/sessions/{sid}")
        response.raise_for_status()
        return dict(response.json())


async def wait_archived(gateway: str, sid: str, token: str | None = None) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        found = await session_json(gateway, sid, token)
        return found if not found["live"] and found["status"] in ("completed", "error", "cancelled") else {}

    return await wait_for(check, timeout=60, interval=0.1, what=f"{sid} archived")


def expected_transcript(session: dict[str, Any]) -> list[dict[str, Any]]:
    """What the page must show for an archived session: every message, every visible part, in OpenCode's order."""
    out = []
    for message in session["messages"]:
        parts = [p for p in message["parts"] if p["type"] not in HIDDEN_PARTS and not p.get("ignored")]
        out.append(
            {
                "id": message["info"]["id"],
                "role": message["info"]["role"],
                "parts": [[p["id"], p["type"]] for p in parts],
                "text": [p["text"] for p in parts if p["type"] in ("text", "reasoning")],
                "tools": [p["state"]["status"] for p in parts if p["type"] == "tool"],
            }
        )
    return out


async def dom_transcript(page: Any) -> list[dict[str, Any]]:
    return list(await page.locator("[data-testid=messages]").first.evaluate(DOM_TRANSCRIPT))


async def test_a_tool_calling_session_plays_out_live_and_moves_to_history(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    # polling only: OpenCode stores the answer's text as "" until the part ends, so the page shows "writing…"
    await make_worker(opencode_url=watch_sim, opencode_events=False)
    gateway = gateway_process().url
    sessions_page = await pages.new()
    await sessions_page.goto(f"{gateway}/")  # redirects to /ui/
    await expect(sessions_page).to_have_url(f"{gateway}/ui/")
    await expect(sessions_page.get_by_test_id("live-connection")).to_contain_text("Live")
    await expect(sessions_page.get_by_test_id("live-empty")).to_be_visible()
    await sessions_page.evaluate("window.__notReloaded = true")

    prompt = "THINK, then run a TOOL SLOW"
    state = await commands.enqueue(redis, db, watch_oc, session_type="ask", ticket_id="T-LIVE", prompt=prompt)
    sid = state["sessionId"]
    live_row = sessions_page.get_by_test_id("live-list").locator(f"li[data-session-id='{sid}']")
    await expect(live_row).to_be_visible()  # appeared without a reload

    view = await pages.new(context=sessions_page.context)
    await view.goto(f"{gateway}/ui/sessions/{sid}")
    await expect(view.get_by_test_id("session-id")).to_have_text(sid)
    status = view.get_by_test_id("session-status")
    await expect(status).to_have_text(re.compile(r"^(pending|running)$"))
    await expect(view.get_by_test_id("live-indicator")).to_have_text("Live")
    await expect(view.locator("[data-testid=messages] li[data-role=user]")).to_contain_text(prompt)

    tool = view.get_by_test_id("tool-call")
    await expect(tool).to_have_attribute("data-tool-status", "running")
    await expect(tool.get_by_test_id("tool-status")).to_have_text("running")
    await expect(status).to_have_text("running")
    await expect(tool).to_have_attribute("data-tool-status", "completed")
    await expect(tool.get_by_test_id("tool-title")).to_have_text("sleep 4; echo hello")
    await expect(tool.get_by_test_id("tool-output")).to_have_text("hello")
    await expect(view.get_by_test_id("writing")).to_be_visible()  # the answer's text part, before it ends
    await view.locator("body").screenshot(path=screenshot_path("session-view-live.png"))
    answer = view.locator("li[data-role=assistant] [data-part-type=text] .text-body")
    await expect(answer).to_have_text("The tool ran. Output: hello")
    await expect(status).to_have_text("completed")
    await expect(view.get_by_test_id("live-indicator")).to_have_text("Archived")
    await expect(view.get_by_test_id("writing")).to_have_count(0)
    await expect(view.get_by_test_id("resuming")).to_be_hidden()
    await view.locator("body").screenshot(path=screenshot_path("session-view.png"))

    archived = await wait_archived(gateway, sid)
    assert await dom_transcript(view) == expected_transcript(archived)

    # the list page, never reloaded: the session left the live list and is at the top of history
    await expect(live_row).to_have_count(0)
    history_row = sessions_page.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}']")
    await expect(history_row).to_be_visible()
    await expect(history_row.locator(".status")).to_have_text("completed")
    assert await sessions_page.evaluate("window.__notReloaded") is True
    await sessions_page.locator("body").screenshot(path=screenshot_path("sessions-list.png"))


@pytest.mark.parametrize("how", ["kill", "sigterm"])
async def test_the_gateway_restarting_mid_session_shows_resuming_then_the_full_transcript(
    how, pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gw = gateway_process()
    state = await commands.enqueue(redis, db, watch_oc, session_type="chat", prompt="TOOL SLOW survive")
    sid = state["sessionId"]
    view = await pages.new()
    await view.goto(f"{gw.url}/ui/sessions/{sid}")
    tool = view.get_by_test_id("tool-call")
    await expect(tool).to_have_attribute("data-tool-status", "running")

    await anyio.to_thread.run_sync(gw.kill if how == "kill" else gw.stop)  # every stream drops mid-session
    resuming = view.get_by_test_id("resuming")
    await expect(resuming).to_be_visible()
    await expect(resuming).to_have_text("Resuming session…")
    await view.locator("body").screenshot(path=screenshot_path(f"session-resuming-{how}.png"))
    await view.wait_for_timeout(1500)  # the session goes on while the gateway is away; the page retries
    await expect(resuming).to_be_visible()
    await anyio.to_thread.run_sync(gw.start)

    await expect(resuming).to_be_hidden()
    await expect(view.get_by_test_id("session-status")).to_have_text("completed")
    await expect(view.get_by_test_id("live-indicator")).to_have_text("Archived")
    archived = await wait_archived(gw.url, sid)
    assert archived["status"] == "completed"
    assert await dom_transcript(view) == expected_transcript(archived)
    await expect(tool).to_have_attribute("data-tool-status", "completed")

    await view.reload()  # and a reload loses nothing either
    await expect(view.get_by_test_id("live-indicator")).to_have_text("Archived")
    assert await dom_transcript(view) == expected_transcript(archived)


async def enqueue(redis: Any, db: Any, oc: Any, prompt: str, **kw: Any) -> str:
    return str((await commands.enqueue(redis, db, oc, prompt=prompt, **kw))["sessionId"])


async def archive(gateway: str, redis: Any, db: Any, oc: Any, prompt: str, token: str | None = None, **kw: Any) -> str:
    sid = await enqueue(redis, db, oc, prompt, **kw)
    await wait_archived(gateway, sid, token)
    return sid


async def row_ids(rows: Any) -> list[str]:
    return list(await rows.locator(":scope > li").evaluate_all("els => els.map((e) => e.dataset.sessionId)"))


async def test_the_ticket_view_shows_the_active_session_above_history_and_loads_a_past_one(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    first = await archive(gateway, redis, db, watch_oc, "ECHO first question", session_type="chat", ticket_id="T-9")
    second = await archive(gateway, redis, db, watch_oc, "ECHO second question", session_type="chat", ticket_id="T-9")
    state = await commands.enqueue(redis, db, watch_oc, session_type="chat", ticket_id="T-9", prompt="TOOL SLOW now")
    active = state["sessionId"]

    page = await pages.new()
    await page.goto(f"{gateway}/ui/tickets/T-9")
    await expect(page.get_by_test_id("ticket-id")).to_have_text("T-9")
    active_view = page.get_by_test_id("active-section").get_by_test_id("session-view")
    await expect(active_view.get_by_test_id("session-id")).to_have_text(active)
    await expect(active_view.get_by_test_id("live-indicator")).to_have_text("Live")
    await expect(active_view.get_by_test_id("session-status")).to_have_text(re.compile(r"^(pending|running)$"))
    history = page.get_by_test_id("ticket-history")
    await expect(history.locator("li")).to_have_count(2)
    assert await row_ids(history) == [second, first]  # newest first
    above = await page.get_by_test_id("active-section").bounding_box()
    below = await page.get_by_test_id("history-section").bounding_box()
    assert above is not None and below is not None and above["y"] < below["y"]

    await history.locator(f"li[data-session-id='{first}'] a").click()
    selected = page.get_by_test_id("selected-section")
    await expect(selected.get_by_test_id("session-id")).to_have_text(first)
    await expect(selected.get_by_test_id("live-indicator")).to_have_text("Archived")
    await expect(selected.get_by_test_id("session-status")).to_have_text("completed")
    await expect(selected.locator("li[data-role=assistant] .text-body")).to_have_text("ECHO: ECHO first question")
    assert page.url.endswith(f"/ui/tickets/T-9?session={first}")
    await page.locator("body").screenshot(path=screenshot_path("ticket-view.png"))

    # the active session ends: it joins the history without a reload; the next one becomes the active one
    await expect(active_view.get_by_test_id("session-status")).to_have_text("completed")
    await expect(active_view.get_by_test_id("live-indicator")).to_have_text("Archived")
    await expect(history.locator("li")).to_have_count(3)
    assert await row_ids(history) == [active, second, first]
    following = await enqueue(redis, db, watch_oc, "TOOL SLOW next", session_type="chat", ticket_id="T-9")
    await expect(active_view.get_by_test_id("session-id")).to_have_text(following)

    await page.reload()  # the selection is in the address
    await expect(page.get_by_test_id("selected-section").get_by_test_id("session-id")).to_have_text(first)


async def test_reasoning_is_collapsed_and_errors_are_shown(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    thinking = await archive(gateway, redis, db, watch_oc, "THINK then TOOLERR", session_type="ask")
    rejected = await archive(gateway, redis, db, watch_oc, "REJECT this one", session_type="ask")

    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/{thinking}")
    await expect(page.get_by_test_id("session-status")).to_have_text("completed")
    reasoning = page.locator("details[data-part-type=reasoning]")
    await expect(reasoning).to_have_count(1)  # the tool step thinks first
    first = reasoning.first
    assert await first.evaluate("(el) => el.open") is False
    await expect(first.locator(".text-body")).to_be_hidden()
    await first.locator("summary").click()
    await expect(first.locator(".text-body")).to_have_text("Thinking about the request step by step.")
    tool = page.get_by_test_id("tool-call")
    await expect(tool).to_have_attribute("data-tool-status", "error")
    await expect(tool.get_by_test_id("tool-status")).to_have_text("error")
    await expect(tool.get_by_test_id("tool-error")).to_contain_text("File not found")

    await page.goto(f"{gateway}/ui/sessions/{rejected}")
    await expect(page.get_by_test_id("session-status")).to_have_text("error")
    await expect(page.get_by_test_id("session-error")).to_contain_text("Scripted rejection")
    await expect(page.get_by_test_id("message-error")).to_contain_text("APIError")


async def test_the_sessions_list_filters_by_type_and_ticket_and_pages(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    ask_a = await archive(gateway, redis, db, watch_oc, "ECHO a", session_type="ask", ticket_id="T-A")
    chat_a = await archive(gateway, redis, db, watch_oc, "ECHO b", session_type="chat", ticket_id="T-A")
    chat_b = await archive(gateway, redis, db, watch_oc, "ECHO c", session_type="chat", ticket_id="T-B")
    admin = await archive(gateway, redis, db, watch_oc, "ECHO d", session_type="admin")

    page = await pages.new()
    await page.goto(f"{gateway}/ui/?limit=2")
    history = page.get_by_test_id("history-list")
    await expect(history.locator("li")).to_have_count(2)
    assert await row_ids(history) == [admin, chat_b]
    await page.get_by_test_id("load-more").click()
    await expect(history.locator("li")).to_have_count(4)
    assert await row_ids(history) == [admin, chat_b, chat_a, ask_a]
    await expect(page.get_by_test_id("load-more")).to_be_hidden()

    await page.get_by_test_id("filter-type").select_option("chat")
    await expect(history.locator("li")).to_have_count(2)
    assert await row_ids(history) == [chat_b, chat_a]
    await page.get_by_test_id("filter-ticket").fill("T-A")
    await page.get_by_test_id("filter-ticket").press("Enter")
    await expect(history.locator("li")).to_have_count(1)
    assert await row_ids(history) == [chat_a]

    live = page.get_by_test_id("live-list")
    running = await enqueue(redis, db, watch_oc, "SLOW x", session_type="chat", ticket_id="T-B")
    await expect(page.get_by_test_id("live-count")).to_have_text("(0)")
    await page.reload()  # the filters live in the address
    await expect(page.get_by_test_id("filter-type")).to_have_value("chat")
    await expect(page.get_by_test_id("filter-ticket")).to_have_value("T-A")
    await expect(history.locator("li")).to_have_count(1)
    await expect(live.locator("li")).to_have_count(0)
    await page.get_by_test_id("filter-ticket").fill("T-B")
    await page.get_by_test_id("filter-ticket").press("Enter")
    await expect(live.locator(f"li[data-session-id='{running}']")).to_be_visible()
    await page.get_by_test_id("filter-type").select_option("ask")
    await expect(live.locator("li")).to_have_count(0)
    await expect(page.get_by_test_id("history-empty")).to_be_visible()


async def test_with_auth_on_pages_take_a_fragment_token_or_ask_for_one(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process(secret=SECRET).url
    admin = mint_token(SECRET, Scope("admin"), 600)
    sid = await archive(gateway, redis, db, watch_oc, "ECHO secret", admin, session_type="ask", ticket_id="T-AUTH")
    for_session = mint_token(SECRET, Scope("session", sid), 600)
    for_ticket = mint_token(SECRET, Scope("ticket", "T-AUTH"), 600)

    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/{sid}#token={for_session}")
    await expect(page.get_by_test_id("session-status")).to_have_text("completed")
    await expect(page.get_by_test_id("session-id")).to_have_text(sid)
    assert "token" not in page.url  # moved from the address bar into the tab's sessionStorage
    await page.reload()
    await expect(page.get_by_test_id("session-status")).to_have_text("completed")
    await page.goto(f"{gateway}/ui/")  # the list needs admin: this token is refused, and the page says so
    await expect(page.get_by_test_id("login")).to_contain_text("admin token")

    fresh = await pages.new()
    await fresh.goto(f"{gateway}/ui/sessions/{sid}")
    await expect(fresh.get_by_test_id("login")).to_be_visible()
    await fresh.goto(f"{gateway}/ui/")
    await expect(fresh.get_by_test_id("login")).to_be_visible()
    await fresh.locator("body").screenshot(path=screenshot_path("login.png"))
    await fresh.get_by_test_id("token-input").fill(admin)
    await fresh.get_by_test_id("token-submit").click()
    await expect(fresh.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}']")).to_be_visible()
    await expect(fresh.get_by_test_id("live-connection")).to_contain_text("Live")
    await fresh.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}'] a.sid").click()
    await expect(fresh.get_by_test_id("session-status")).to_have_text("completed")  # the token went along

    ticket = await pages.new()
    await ticket.goto(f"{gateway}/ui/tickets/T-AUTH#token={for_ticket}")
    await expect(ticket.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}']")).to_be_visible()
    await expect(ticket.get_by_test_id("no-active")).to_be_visible()


async def test_the_pages_and_their_files_are_served(make_gateway, redis, db):
    """No browser needed: the routes, redirects, headers and static files the pages rely on."""
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        assert (await client.get("/")).headers["location"] == "/ui/"
        assert (await client.get("/ui")).headers["location"] == "ui/"
        for path, script in (
            ("/ui/", "../static/sessions-page.js"),
            ("/ui/sessions/ses_0123456789abcdefABCDEFGHIJ", "../../static/session-page.js"),
            ("/ui/tickets/T-1", "../../static/ticket-page.js"),
        ):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert f'src="{script}"' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["referrer-policy"] == "no-referrer"
        bad = await client.get("/ui/sessions/%3Cscript%3E")
        assert bad.status_code == 400 and "<script>" not in bad.text
        for name in ("opencode-stream.js", "ui.js", "session-view.js", "sessions-page.js", "ui.css"):
            served = await client.get(f"/static/{name}")
            assert served.status_code == 200, name
        js = await client.get("/static/opencode-stream.js")
        assert "javascript" in js.headers["content-type"]
        assert "export function openSessionStream" in js.text
        hook = await client.get("/static/useOpencodeStream.ts")
        assert hook.headers["content-type"].startswith("text/plain")
        assert "export function useOpencodeStream" in hook.text
        assert (await client.get("/static/nope.js")).status_code == 404
