"""How the pages read, in Chromium against a real gateway process: answers as sanitised markdown with highlighted
code (hostile markdown stays inert under the real CSP), times with dates and the browser's clock, durations, copy
buttons for ids, no internal details, clear pages for unknown and invalid ids, a ticket token's way to its page,
and dark mode."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from shared import commands
from shared.tokens import Scope, mint_token
from tests.helpers import wait_for
from tests.odd_shapes import odd_requests, odd_transcripts

pytestmark = pytest.mark.anyio

SECRET = "browser-rendering-secret-of-enough-length"
# The simulator answers "ECHO: <prompt>", so a prompt is the markdown the page renders.
MARKDOWN_PROMPT = (
    "ECHO **bold** and `inline`\n\n"
    "```python\ndef answer(x):\n    return 42  # the answer\n```\n\n"
    "- [docs](https://example.com/docs)\n"
    "- [click](javascript:window.__xss=1)\n"
    "- [data](data:text/html,<script>window.__xss=1</script>)\n\n"
    '<img src=x onerror="window.__xss=1"> <script>window.__xss=1</script> ![pic](data:image/png;base64,AAAA)'
)
# Rendered in the page itself, under its CSP: each must come out with no script, handler or unsafe address.
HOSTILE = [
    "[a](javascript:window.__xss=1)",
    "[a](JaVaScRiPt:window.__xss=1)",
    "[a](&#106;avascript:window.__xss=1)",
    "[a](java\nscript:window.__xss=1)",
    "<javascript:window.__xss=1>",
    "[a](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)",
    "![a](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9d2luZG93Ll9feHNzPTE+)",
    '![a](x" onerror="window.__xss=1)',
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    'text <a href="javascript:window.__xss=1" onclick="window.__xss=1">a</a> <svg onload=window.__xss=1>',
    '<iframe src="javascript:window.__xss=1"></iframe>',
    "<style>body{display:none}</style>",
    '[a](https://example.com "t\\" onmouseover=\\"window.__xss=1")',
    "```html\n<script>window.__xss=1</script>\n```",
    "<details open ontoggle=window.__xss=1>x</details>",
]
RENDER_HOSTILE = """async (cases) => {
  const { renderMarkdown } = await import(`${location.origin}/static/markdown.js`);
  const violations = [];
  document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
  const out = [];
  for (const text of cases) {
    const div = document.createElement("div");
    div.append(renderMarkdown(text));
    document.body.append(div);
    out.push({ text, html: div.innerHTML, tags: [...div.querySelectorAll("*")].map((el) => el.tagName),
      attrs: [...div.querySelectorAll("*")].flatMap((el) => [...el.attributes].map((a) => [a.name, a.value])) });
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { out, violations, xss: window.__xss ?? null };
}"""


# The session view's renderer and the pending requests' views, fed directly with what OpenCode's values may be.
RENDER_ODD = """async ([transcripts, requests]) => {
  const { SessionView } = await import(`${location.origin}/static/session-view.js`);
  const { pendingRequest, pendingSummary } = await import(`${location.origin}/static/pending-view.js`);
  const failed = [];
  const root = document.createElement("div");
  document.body.append(root);
  for (const [name, messages] of transcripts) {
    const view = new SessionView(root);
    try {
      view._build();
      for (const live of [true, false]) {
        view._renderMessages({ messages, live });
        if (!root.textContent.includes("so") && !root.textContent.includes("hi")) failed.push(`${name}: no text`);
      }
    } catch (e) {
      failed.push(`${name}: ${e}`);
    }
    root.replaceChildren();
  }
  for (const [name, request] of requests) {
    try {
      root.append(pendingRequest("ses_x", request), pendingSummary({ pending: [request] }));
      if (!root.textContent.includes("opencode-sessions")) failed.push(`${name}: no answering command`);
    } catch (e) {
      failed.push(`${name}: ${e}`);
    }
    root.replaceChildren();
  }
  return failed;
}"""


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def archive(gateway: str, redis: Any, db: Any, oc: Any, prompt: str, token: str | None = None, **kw: Any) -> str:
    """Enqueue a session and wait until the gateway serves it archived."""
    sid = str((await commands.enqueue(redis, db, oc, prompt=prompt, **kw))["sessionId"])
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def archived() -> bool:
        async with httpx.AsyncClient(base_url=gateway, timeout=10, headers=headers) as client:
            found = (await client.get(f"/sessions/{sid}")).json()
        return found.get("live") is False and found.get("status") in ("completed", "error", "cancelled")

    await wait_for(archived, timeout=60, interval=0.1, what=f"{sid} archived")
    return sid


async def test_answers_render_as_sanitised_markdown_with_highlighted_code(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = await archive(gateway, redis, db, watch_oc, MARKDOWN_PROMPT, session_type="ask")
    page = await pages.new()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{gateway}/ui/sessions/{sid}")
    answer = page.locator("li[data-role=assistant] [data-part-type=text] .text-body")
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("p code")).to_have_text("inline")
    code = answer.locator("pre[data-language=python]")
    await expect(code).to_have_text("def answer(x):\n    return 42  # the answer")
    await expect(code.locator(".hljs-keyword").first).to_have_text("def")
    await expect(code.locator(".hljs-comment")).to_have_text("# the answer")
    await expect(answer.locator("a[href='https://example.com/docs']")).to_have_attribute("rel", re.compile("noopener"))
    await expect(answer.locator("script, img, iframe, svg")).to_have_count(0)
    hrefs = await answer.locator("a").evaluate_all("els => els.map((a) => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/docs", None, None]  # the javascript: and data: links lost their href
    assert not [h for h in hrefs if h and re.match(r"\s*(javascript|data):", h, re.I)]
    await expect(answer).to_contain_text('<img src=x onerror="window.__xss=1">')  # shown as the text it is
    await expect(answer).to_contain_text("pic (data:image/png;base64,AAAA)")
    await answer.locator("a", has_text="click").click()
    await answer.locator("a", has_text="data").click()
    assert await page.evaluate("window.__xss ?? null") is None
    assert dialogs == []
    # the prompt is shown as typed, not as markdown
    await expect(page.locator("li[data-role=user] .text-body")).to_have_text(MARKDOWN_PROMPT)
    await page.locator("body").screenshot(path=screenshot_path("session-markdown.png"))


async def test_hostile_markdown_stays_inert_under_the_pages_csp(pages, gateway_process):
    gateway = gateway_process().url
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/ses_0123456789abcdefABCDEFGHIJ")  # any page: its CSP is what matters
    result = await page.evaluate(RENDER_HOSTILE, HOSTILE)
    assert result["xss"] is None
    assert result["violations"] == []  # nothing even tried to run or load
    for case in result["out"]:
        assert not {"SCRIPT", "IMG", "IFRAME", "SVG", "STYLE", "svg"} & set(case["tags"]), case
        for name, value in case["attrs"]:
            assert not name.startswith("on"), case
            assert not re.match(r"\s*(javascript|data|vbscript):", value, re.I), case
    assert result["out"][8]["html"] == '<p class="md-raw">&lt;script&gt;window.__xss=1&lt;/script&gt;</p>'


async def test_values_of_odd_shape_from_opencode_render_and_never_break_a_page(pages, gateway_process):
    """Every field below the ids of a transcript and of a pending request, in every odd shape (tests/odd_shapes.py):
    the view renders the rest. Was: a `time.created` that is no number threw RangeError (the whole transcript
    failed to render), as did a patch's `files` that is no list and a question that is no object."""
    gateway = gateway_process().url
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/ses_0123456789abcdefABCDEFGHIJ")
    transcripts = [[name, messages] for name, _, _, messages in odd_transcripts()]
    requests = [list(case) for case in odd_requests()]
    assert await page.evaluate(RENDER_ODD, [transcripts, requests]) == []


async def test_times_follow_the_browsers_locale_and_carry_dates_and_durations(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = await archive(gateway, redis, db, watch_oc, "run a TOOL please", session_type="chat", ticket_id="T-TIME")
    clock_24 = re.compile(r"^\d\d:\d\d$")
    clock_12 = re.compile(r"^\d{1,2}:\d\d\s[AP]M$")

    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        session = (await client.get(f"/sessions/{sid}")).json()
    just_after = session["startedAt"] / 1000 + 1  # the clock is fixed: "today" does not depend on when this runs
    british = await pages.new(locale="en-GB", timezone_id="Europe/London")
    await british.clock.set_fixed_time(just_after)
    await british.goto(f"{gateway}/ui/sessions/{sid}")
    started = british.locator(".session-head .meta time")
    await expect(started).to_have_text(clock_24)
    assert re.search(r"\d\d:\d\d:\d\d", await started.get_attribute("title") or "")  # the full time on hover
    await expect(british.get_by_test_id("session-duration")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    await expect(british.get_by_test_id("session-duration")).to_have_attribute("title", "took")
    await expect(british.get_by_test_id("tool-duration")).to_have_text(re.compile(r"^\d+\.\d s$"))
    await expect(british.locator("li[data-role=assistant] .message-head .duration").first).to_be_visible()

    american = await pages.new(locale="en-US", timezone_id="America/New_York")
    await american.clock.set_fixed_time(just_after)
    await american.goto(f"{gateway}/ui/sessions/{sid}")
    await expect(american.locator(".session-head .meta time")).to_have_text(clock_12)

    later = await pages.new(locale="en-GB", timezone_id="Europe/London")
    await later.clock.set_fixed_time(just_after + 3 * 86_400)  # three days on: not today
    await later.goto(f"{gateway}/ui/tickets/T-TIME")
    row_time = later.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}'] time")
    await expect(row_time).to_have_text(re.compile(r"^\d{1,2} [A-Z][a-z]{2}, \d\d:\d\d$"))
    took = later.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}']").get_by_test_id("took")
    await expect(took).to_have_text(re.compile(r"^\d+(\.\d)? s$"))


async def test_a_live_sessions_duration_counts_up_then_stops(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = str((await commands.enqueue(redis, db, watch_oc, session_type="chat", prompt="TOOL SLOW wait"))["sessionId"])
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/{sid}")
    await expect(page.get_by_test_id("live-indicator")).to_have_text("Live")
    duration = page.get_by_test_id("session-duration")
    await expect(duration).to_have_attribute("title", "so far")
    first = await duration.text_content()
    await expect(duration).not_to_have_text(first or "")  # it ticks without any event from the session
    await expect(page.get_by_test_id("live-indicator")).to_have_text("Archived")
    await expect(duration).to_have_attribute("title", "took")
    final = await duration.text_content()
    await page.wait_for_timeout(1500)  # a finished session's duration holds still
    assert await duration.text_content() == final


async def test_ids_copy_with_a_click(pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = await archive(gateway, redis, db, watch_oc, "ECHO copy me", session_type="chat", ticket_id="T-COPY")
    page = await pages.new(permissions=["clipboard-read", "clipboard-write"])
    await page.goto(f"{gateway}/ui/sessions/{sid}")
    button = page.get_by_test_id("copy-session-id")
    await button.click()
    await expect(button).to_have_text("copied")
    assert await page.evaluate("navigator.clipboard.readText()") == sid
    await expect(button).to_have_text("copy")  # back after a moment

    await page.goto(f"{gateway}/ui/tickets/T-COPY")
    await page.get_by_test_id("copy-ticket-id").click()
    assert await page.evaluate("navigator.clipboard.readText()") == "T-COPY"
    await page.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}'] button.copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == sid
    await expect(page.get_by_test_id("selected-section")).to_be_hidden()  # copying did not open the session

    await page.goto(f"{gateway}/ui/")
    await page.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}'] button.copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == sid
    assert page.url == f"{gateway}/ui/"  # copying did not follow the row's link

    # plain http to a host other than localhost has no Clipboard API: the button copies all the same
    bare = await pages.new(context=page.context)
    await bare.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined })")
    await bare.goto(f"{gateway}/ui/tickets/T-COPY")
    assert await bare.evaluate("navigator.clipboard") is None
    await bare.get_by_test_id("copy-ticket-id").click()
    await expect(bare.get_by_test_id("copy-ticket-id")).to_have_text("copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "T-COPY"


async def test_no_internal_details_leak_and_the_live_heading_says_live_once(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = await archive(gateway, redis, db, watch_oc, "ECHO one", session_type="ask")
    page = await pages.new()
    await page.goto(f"{gateway}/ui/")
    heading = page.get_by_test_id("live-section").locator("h2")
    await expect(page.get_by_test_id("live-connection")).to_have_attribute("data-state", "connected")
    assert re.fullmatch(r"Live\s*\(0\)", await heading.inner_text())  # one "Live", its count, nothing else
    row = page.get_by_test_id("history-list").locator(f"li[data-session-id='{sid}']")
    await expect(row).to_contain_text("2 messages")
    await page.goto(f"{gateway}/ui/sessions/{sid}")
    await expect(page.get_by_test_id("session-foot")).to_contain_text("ended")
    assert "seq" not in await page.locator("body").inner_text()


async def test_an_unknown_session_says_not_found_and_an_invalid_id_gets_a_styled_page(
    pages, gateway_process, screenshot_path
):
    gateway = gateway_process().url
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/ses_0123456789abcdefABCDEFGHIJ")
    await expect(page.get_by_test_id("live-indicator")).to_have_text("not found")
    await expect(page.get_by_test_id("session-title")).to_have_text("Session not found")
    await expect(page.get_by_test_id("session-status")).to_be_hidden()
    assert "onnecting" not in await page.locator("body").inner_text()  # what shows, not the hidden placeholders
    await page.locator("body").screenshot(path=screenshot_path("session-not-found.png"))

    response = await page.goto(f"{gateway}/ui/sessions/%3Cimg%20src=x%20onerror=alert(1)%3E")
    assert response is not None and response.status == 400
    notice = page.get_by_test_id("invalid-address")
    await expect(notice.locator("h1")).to_have_text("Invalid address")
    await expect(page.locator("img")).to_have_count(0)  # the bad id is shown escaped
    await expect(page.locator(".topbar .brand")).to_be_visible()
    assert await notice.evaluate("(el) => getComputedStyle(el).borderRadius") == "10px"  # ui.css applies
    await page.locator("body").screenshot(path=screenshot_path("invalid-address.png"))
    await notice.get_by_role("link").click()
    await expect(page).to_have_url(f"{gateway}/ui/")


async def test_a_ticket_or_session_token_on_the_list_links_its_own_page(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process(secret=SECRET).url
    admin = mint_token(SECRET, Scope("admin"), 600)
    sid = await archive(gateway, redis, db, watch_oc, "ECHO mine", admin, session_type="chat", ticket_id="T-MINE")

    page = await pages.new()
    await page.goto(f"{gateway}/ui/#token={mint_token(SECRET, Scope('ticket', 'T-MINE'), 600)}")
    link = page.get_by_test_id("token-scope-link")
    await expect(link).to_have_text("T-MINE")
    await link.click()
    await expect(page).to_have_url(f"{gateway}/ui/tickets/T-MINE")
    await expect(page.get_by_test_id("ticket-history").locator(f"li[data-session-id='{sid}']")).to_be_visible()

    other = await pages.new()
    await other.goto(f"{gateway}/ui/#token={mint_token(SECRET, Scope('session', sid), 600)}")
    await other.get_by_test_id("token-scope-link").click()
    await expect(other.get_by_test_id("session-status")).to_have_text("completed")


async def test_dark_mode_colours_the_markdown_and_code(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db, screenshot_path
):
    await make_worker(opencode_url=watch_sim)
    gateway = gateway_process().url
    sid = await archive(gateway, redis, db, watch_oc, MARKDOWN_PROMPT, session_type="ask")
    colours = """(el) => ({
        body: getComputedStyle(document.body).backgroundColor,
        pre: getComputedStyle(el).backgroundColor,
        keyword: getComputedStyle(el.querySelector('.hljs-keyword')).color,
    })"""
    seen = {}
    for scheme in ("light", "dark"):
        page = await pages.new(color_scheme=scheme)
        await page.goto(f"{gateway}/ui/sessions/{sid}")
        code = page.locator("pre[data-language=python]")
        await expect(code.locator(".hljs-keyword").first).to_be_visible()
        seen[scheme] = await code.evaluate(colours)
        await page.locator("body").screenshot(path=screenshot_path(f"session-markdown-{scheme}.png"))
    assert seen["light"] == {"body": "rgb(246, 247, 249)", "pre": "rgb(241, 243, 246)", "keyword": "rgb(166, 38, 164)"}
    assert seen["dark"] == {"body": "rgb(17, 20, 24)", "pre": "rgb(35, 40, 49)", "keyword": "rgb(209, 154, 240)"}


async def test_a_streaming_answer_renders_as_markdown_with_its_caret_as_it_grows(
    pages, gateway_process, make_worker, watch_sim, watch_oc, redis, db
):
    await make_worker(opencode_url=watch_sim, opencode_events=True)  # the event path: the text grows as it streams
    gateway = gateway_process().url
    prompt = "SLOW with **bold** words and a fence\n```python\nimport os\n```"
    sid = str((await commands.enqueue(redis, db, watch_oc, session_type="chat", prompt=prompt))["sessionId"])
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/{sid}")
    # read in the page while the text streams (one check, so the answer cannot end between finding and reading)
    caret = await page.wait_for_function(
        """() => {
            const el = document.querySelector("li[data-role=assistant] .part.text.streaming .markdown");
            return el && el.lastElementChild ? getComputedStyle(el.lastElementChild, "::after").content : null;
        }"""
    )
    assert await caret.json_value() == '"▍"'
    answer = page.locator("li[data-role=assistant] [data-part-type=text] .markdown")
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("pre[data-language=python] .hljs-keyword")).to_have_text("import")
    await expect(page.get_by_test_id("live-indicator")).to_have_text("Archived")
    await expect(page.locator(".part.text.streaming")).to_have_count(0)
