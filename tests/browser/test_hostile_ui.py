"""The pages at the extremes, in Chromium under the pages' CSP: words thousands of characters long (a path, a
command, a model's output without spaces) wrap inside the page instead of widening it; a browser that refuses the
page its storage (site data blocked) still gets a working page and sign-in."""

from __future__ import annotations

from typing import Any

import pytest

from shared.tokens import Scope, mint_token

pytestmark = pytest.mark.anyio

SECRET = "browser-hostile-secret-of-enough-length"
SID = "ses_0123456789abcdefABCDEFGHIJ"
# What Chrome does when the user blocks the site's data: reading `sessionStorage` throws.
NO_STORAGE = """Object.defineProperty(window, "sessionStorage", {
  get() { throw new DOMException("Access is denied for this document.", "SecurityError"); } });"""

# A session view, a waiting session's requests and a list row, every field a word of 3,000 characters; returns
# the elements reaching past the window's right edge (the innermost ones), and how wide the page became.
RENDER_LONG = """async () => {
  const { SessionView } = await import(`${location.origin}/static/session-view.js`);
  const { PendingPanel, pendingSummary } = await import(`${location.origin}/static/pending-view.js`);
  const { h } = await import(`${location.origin}/static/ui.js`);
  const L = "A".repeat(3000);
  const app = document.getElementById("app");
  const panel = new PendingPanel();
  const root = h("div", {});
  const permission = { kind: "permission", id: "per_1", permission: L, metadata: { command: L } };
  const options = [{ label: L, description: L }];
  const question = { kind: "question", id: "que_1", questions: [{ question: L, options }] };
  const row = h("ul", { class: "rows" }, h("li", { class: "row" }, h("span", { class: "row-title" }, L),
    pendingSummary({ pending: [permission] })));
  app.replaceChildren(panel.el, root, row);
  panel.render({ sessionId: "ses_x", pending: [permission, question] });
  const view = new SessionView(root);
  view._build();
  const tool = { status: "error", title: L, input: { command: L, filePath: L }, output: L, error: L };
  const messages = [
    { info: { id: "msg_1", role: "user", time: { created: 1 } }, parts: [{ id: "prt_1", type: "text", text: L }] },
    { info: { id: "msg_2", role: "assistant", agent: L, modelID: L, time: { created: 2 }, error: { name: L } },
      parts: [{ id: "prt_2", type: "tool", tool: L, state: tool }, { id: "prt_3", type: "file", filename: L },
        { id: "prt_4", type: "text", text: `${L}\\n\\n\\`${L}\\`\\n\\n[${L}](https://example.com/${L})` },
        { id: "prt_5", type: "patch", files: [L] }, { id: "prt_6", type: "subtask", description: L }] },
  ];
  view._renderMessages({ messages, live: true });
  view.el.title.textContent = L;
  view.el.error.hidden = false;
  view.el.error.textContent = L;
  const edge = document.documentElement.clientWidth + 1;
  const past = (el) => el.getBoundingClientRect().right > edge;
  const over = [...app.querySelectorAll("*")].filter((el) => past(el) && ![...el.children].some(past));
  return { width: document.documentElement.scrollWidth, window: document.documentElement.clientWidth,
    over: over.map((el) => `${el.tagName}.${el.className}`),
    role: app.querySelector(".role[class]").getBoundingClientRect().height };
}"""


async def test_words_of_any_length_wrap_inside_the_page(pages, gateway_process):
    """Was: a long tool name or title, a pending command, a question or option, an agent name widened the page
    to 50,000 px (they sit in flex rows and code elements that did not wrap)."""
    gateway = gateway_process().url
    page = await pages.new()
    await page.goto(f"{gateway}/ui/sessions/ses_0123456789abcdefABCDEFGHIJ")
    result = await page.evaluate(RENDER_LONG)
    assert result["over"] == []
    assert result["width"] == result["window"]
    assert result["role"] < 30, "the role's one word stays on one line beside a long agent name"


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def test_without_storage_pages_work_and_a_token_lasts_the_page(pages, gateway_process):
    """Was: the first read of sessionStorage threw, so every page stayed at "Loading…" (auth on or off)."""
    open_gateway = gateway_process().url
    page = await pages.new()
    await page.add_init_script(NO_STORAGE)
    await page.goto(f"{open_gateway}/ui/sessions/{SID}")
    await expect(page.get_by_test_id("session-title")).to_have_text("Session not found")

    gateway = gateway_process(secret=SECRET).url
    admin = mint_token(SECRET, Scope("admin"), 600)
    await page.goto(f"{gateway}/ui/sessions/{SID}#token={admin}")
    await expect(page.get_by_test_id("session-title")).to_have_text("Session not found")
    assert "token" not in page.url
    await page.goto(f"{gateway}/ui/")
    await expect(page.get_by_test_id("login")).to_be_visible()  # kept by no storage: asked again
    await page.get_by_test_id("token-input").fill(admin)
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id("live-connection")).to_contain_text("Live")  # the admin token in use
    await expect(page.get_by_test_id("login")).to_have_count(0)
    assert "token" not in page.url
