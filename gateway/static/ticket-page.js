// /ui/tickets/{ticketId} — the ticket's active session (live, if any) above its history; a click on a past
// session loads it below. Needs a token for the ticket (or admin).

import { GatewayError, fetchActiveSession, fetchTicketHistory } from "./opencode-stream.js";
import { SessionView } from "./session-view.js";
import {
  API,
  UI,
  copyButton,
  countOf,
  errorBox,
  h,
  isAuthError,
  pageSize,
  renderAuthNav,
  sessionHref,
  showLogin,
  statusBadge,
  takeToken,
  timeEl,
  tookEl,
} from "./ui.js";
import { ticketUsageLine } from "./usage-view.js";

const PAGE_SIZE = pageSize(new URLSearchParams(location.search).get("limit"), 10);
const ACTIVE_POLL_MS = 3000; // no per-ticket stream exists: ask for an active session while there is none

const ticketId = document.body.dataset.id;
const token = takeToken();
renderAuthNav(token);
const app = document.getElementById("app");

const activeHolder = h("div", { dataset: { testid: "active-session" } });
const noActive = h("p", { class: "muted empty", dataset: { testid: "no-active" } }, "No active session.");
const historyList = h("ul", { class: "rows", dataset: { testid: "ticket-history" } });
const historyEmpty = h("p", { class: "muted empty" }, "No archived sessions.");
const moreButton = h(
  "button",
  { type: "button", class: "more", dataset: { testid: "load-more" }, onclick: () => loadHistory(false) },
  "Load more",
);
const selectedHolder = h("div", {});
const selectedSection = h(
  "section",
  { class: "card", dataset: { testid: "selected-section" }, hidden: true },
  h("h2", {}, "Selected session"),
  selectedHolder,
);
const problems = h("div", {});

app.replaceChildren(
  h("nav", { class: "crumbs" }, h("a", { href: UI }, "← All sessions")),
  h(
    "div",
    { class: "page-head" },
    h(
      "h1",
      {},
      "Ticket ",
      h("code", { dataset: { testid: "ticket-id" } }, ticketId),
      copyButton(ticketId, { label: "ticket id", dataset: { testid: "copy-ticket-id" } }),
    ),
  ),
  ticketUsageLine(ticketId, token),
  problems,
  h(
    "section",
    { class: "card", dataset: { testid: "active-section" } },
    h("h2", {}, "Active session"),
    noActive,
    activeHolder,
  ),
  h(
    "section",
    { class: "card", dataset: { testid: "history-section" } },
    h("h2", {}, "History"),
    historyList,
    historyEmpty,
    moreButton,
  ),
  selectedSection,
);

let stopped = false;
let active = null; // the SessionView of the active session
let activeId = null;
let pollTimer = null;
let selected = null;
let archive = { sessions: [], nextCursor: null, loading: true };

function fail(err) {
  if (stopped) return;
  const status = err instanceof GatewayError ? err.status : err.errorStatus;
  if (isAuthError(status)) {
    stopped = true;
    clearTimeout(pollTimer);
    if (active) active.close();
    if (selected) selected.close();
    showLogin(app, { status, message: err.message ?? err.error, needs: `a token for ticket ${ticketId}` });
    return;
  }
  problems.replaceChildren(errorBox(err.message ?? String(err), { dataset: { testid: "page-error" } }));
}

function viewOptions() {
  return { token, onFatal: (stream) => isAuthError(stream.errorStatus) && fail(stream) };
}

async function pollActive() {
  pollTimer = null;
  if (stopped) return;
  try {
    const session = await fetchActiveSession(API, ticketId, { token });
    problems.replaceChildren();
    if (session && session.sessionId !== activeId) showActive(session.sessionId);
    else if (!session) refreshHistory(null, 1); // a session too short to be caught live still shows up
  } catch (err) {
    fail(err);
  }
  if (!stopped && (!active || !active.stream || active.stream.completed || active.stream.error)) {
    pollTimer = setTimeout(pollActive, ACTIVE_POLL_MS);
  }
}

function showActive(sessionId) {
  if (active) active.close();
  activeId = sessionId;
  noActive.hidden = true;
  active = new SessionView(activeHolder, {
    ...viewOptions(),
    onComplete: () => {
      // archived now: it shows up in history; look out for the ticket's next session
      refreshHistory(sessionId);
      clearTimeout(pollTimer);
      pollTimer = setTimeout(pollActive, ACTIVE_POLL_MS / 3);
    },
  });
  active.open(sessionId);
}

function select(sessionId, push = true) {
  if (selected) selected.close();
  selectedSection.hidden = false;
  selected = new SessionView(selectedHolder, viewOptions()).open(sessionId);
  for (const li of historyList.children) li.classList.toggle("selected", li.dataset.sessionId === sessionId);
  if (push) {
    const search = new URLSearchParams(location.search);
    search.set("session", sessionId);
    history.replaceState(null, "", `${location.pathname}?${search}`);
  }
  selectedSection.scrollIntoView({ block: "start" });
}

function row(summary) {
  const link = h(
    "a",
    {
      class: "sid",
      href: sessionHref(summary.sessionId),
      onclick: (event) => {
        if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return; // a new tab: let it
        event.preventDefault();
        select(summary.sessionId);
      },
    },
    h("code", {}, summary.sessionId),
  );
  return h(
    "li",
    { class: "row", dataset: { sessionId: summary.sessionId, status: summary.status } },
    link,
    copyButton(summary.sessionId, { label: "session id" }),
    statusBadge(summary.status),
    h("span", { class: "tag" }, summary.sessionType),
    h("span", { class: "row-title" }, summary.title || ""),
    summary.messageCount !== undefined ? h("span", { class: "muted" }, countOf(summary.messageCount, "message")) : null,
    timeEl(summary.startedAt, { class: "muted" }),
    tookEl(summary),
  );
}

function renderHistory() {
  historyList.replaceChildren(...archive.sessions.map(row));
  const chosen = selected && selected.sessionId;
  for (const li of historyList.children) li.classList.toggle("selected", li.dataset.sessionId === chosen);
  historyEmpty.hidden = archive.sessions.length > 0 || archive.loading;
  moreButton.hidden = !archive.nextCursor;
  moreButton.disabled = archive.loading;
}

async function loadHistory(first) {
  archive.loading = true;
  renderHistory();
  try {
    const page = await fetchTicketHistory(API, ticketId, {
      token,
      limit: PAGE_SIZE,
      before: first ? null : archive.nextCursor,
    });
    const known = new Set(archive.sessions.map((s) => s.sessionId));
    archive.sessions = archive.sessions.concat(page.sessions.filter((s) => !known.has(s.sessionId)));
    archive.nextCursor = page.nextCursor;
  } catch (err) {
    fail(err);
  } finally {
    archive.loading = false;
    renderHistory();
  }
}

async function refreshHistory(endedId, tries = 6) {
  try {
    const page = await fetchTicketHistory(API, ticketId, { token, limit: PAGE_SIZE });
    const known = new Set(archive.sessions.map((s) => s.sessionId));
    const fresh = page.sessions.filter((s) => !known.has(s.sessionId));
    if (fresh.length) {
      archive.sessions = [...fresh, ...archive.sessions].sort(
        (a, b) => (b.startedAt ?? 0) - (a.startedAt ?? 0) || (a.sessionId < b.sessionId ? 1 : -1),
      );
      renderHistory();
    }
    if (endedId && !page.sessions.some((s) => s.sessionId === endedId) && tries > 1) {
      setTimeout(() => refreshHistory(endedId, tries - 1), 500);
    }
  } catch (err) {
    fail(err);
  }
}

window.addEventListener("pagehide", () => {
  clearTimeout(pollTimer);
  if (active) active.close();
  if (selected) selected.close();
});
// Back from the back/forward cache: what pagehide closed opens again (history catches up as the views complete).
window.addEventListener("pageshow", (event) => {
  if (!event.persisted || stopped) return;
  if (active) active.open(activeId);
  if (selected) selected.open(selected.sessionId);
  pollActive();
});

pollActive();
loadHistory(true);
const chosen = new URLSearchParams(location.search).get("session");
if (chosen) select(chosen, false);
