// /ui/ — live sessions (kept current by the live-list stream) above archived ones (paginated), filtered by type
// and ticket. A session that ends leaves the live list and shows up in history without a reload. Admin only.

import { GatewayError, fetchSessions, openLiveSessionsStream } from "./opencode-stream.js";
import { pendingSummary } from "./pending-view.js";
import {
  API,
  SESSION_TYPES,
  copyButton,
  countOf,
  pageSize,
  errorBox,
  h,
  isAuthError,
  renderAuthNav,
  sessionHref,
  showLogin,
  statusBadge,
  takeToken,
  ticketLink,
  timeEl,
  tookEl,
} from "./ui.js";

const token = takeToken();
renderAuthNav(token);
const app = document.getElementById("app");

const params = new URLSearchParams(location.search);
const PAGE_SIZE = pageSize(params.get("limit"), 20);
const filters = { type: params.get("type") || "", ticket: params.get("ticket") || "" };
if (!SESSION_TYPES.includes(filters.type)) filters.type = "";

let liveStream = null;
let archive = { sessions: [], nextCursor: null, loading: false };
let generation = 0; // bumped by each start(): answers for an older filter are dropped
let stopped = false;
// Ended sessions not yet seen in history, each with the refreshes left to look for it. One refresh at a time
// serves them all: a burst of endings is a request or a few, not a few each.
const awaited = new Map();
let refreshTimer = null; // a refresh is due or under way

const typeSelect = h(
  "select",
  { name: "type", dataset: { testid: "filter-type" } },
  h("option", { value: "" }, "all types"),
  SESSION_TYPES.map((t) => h("option", { value: t }, t)),
);
typeSelect.value = filters.type;
const ticketInput = h("input", {
  name: "ticket",
  placeholder: "ticket id",
  value: filters.ticket,
  pattern: "[A-Za-z0-9_.\\-]{1,128}",
  dataset: { testid: "filter-ticket" },
});
const form = h(
  "form",
  {
    class: "filters",
    dataset: { testid: "filters" },
    onsubmit: (event) => {
      event.preventDefault();
      applyFilters();
    },
  },
  h("label", {}, "Type ", typeSelect),
  h("label", {}, "Ticket ", ticketInput),
  h("button", { type: "submit" }, "Filter"),
  h(
    "button",
    {
      type: "button",
      class: "link",
      onclick: () => {
        typeSelect.value = "";
        ticketInput.value = "";
        applyFilters();
      },
    },
    "clear",
  ),
);
typeSelect.addEventListener("change", () => applyFilters());

const liveList = h("ul", { class: "rows", dataset: { testid: "live-list" } });
const liveEmpty = h("p", { class: "muted empty", dataset: { testid: "live-empty" } }, "No live sessions.");
const liveState = h("span", { class: "conn", dataset: { testid: "live-connection" } });
const liveCount = h("span", { class: "count", dataset: { testid: "live-count" } });
const historyList = h("ul", { class: "rows", dataset: { testid: "history-list" } });
const historyEmpty = h("p", { class: "muted empty", dataset: { testid: "history-empty" } }, "No archived sessions.");
const moreButton = h(
  "button",
  { type: "button", class: "more", dataset: { testid: "load-more" }, onclick: () => loadHistory(false) },
  "Load more",
);
const problems = h("div", {});

app.replaceChildren(
  h("div", { class: "page-head" }, h("h1", {}, "Sessions"), form),
  problems,
  h(
    "section",
    { class: "card", dataset: { testid: "live-section" } },
    h("h2", {}, liveState, liveCount),
    liveList,
    liveEmpty,
  ),
  h(
    "section",
    { class: "card", dataset: { testid: "history-section" } },
    h("h2", {}, "History"),
    historyList,
    historyEmpty,
    moreButton,
  ),
);

function applyFilters() {
  filters.type = typeSelect.value;
  filters.ticket = ticketInput.value.trim();
  const search = new URLSearchParams();
  if (filters.type) search.set("type", filters.type);
  if (filters.ticket) search.set("ticket", filters.ticket);
  if (params.has("limit")) search.set("limit", String(PAGE_SIZE));
  const query = search.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
  start();
}

function matches(summary) {
  return (!filters.type || summary.sessionType === filters.type) && (!filters.ticket || summary.ticketId === filters.ticket);
}

function row(summary) {
  return h(
    "li",
    { class: "row", dataset: { sessionId: summary.sessionId, status: summary.status } },
    h("a", { class: "sid", href: sessionHref(summary.sessionId) }, h("code", {}, summary.sessionId)),
    copyButton(summary.sessionId, { label: "session id" }),
    statusBadge(summary.status),
    h("span", { class: "tag" }, summary.sessionType),
    ticketLink(summary.ticketId),
    h("span", { class: "row-title" }, summary.title || ""),
    summary.messageCount !== undefined ? h("span", { class: "muted" }, countOf(summary.messageCount, "message")) : null,
    timeEl(summary.startedAt, { class: "muted" }),
    tookEl(summary),
    pendingSummary(summary),
  );
}

function renderLive(stream) {
  const sessions = stream.sessions.filter(matches);
  liveList.replaceChildren(...sessions.map(row));
  liveEmpty.hidden = sessions.length > 0 || !stream.received;
  liveCount.textContent = stream.received ? `(${sessions.length})` : "";
  // the heading's word itself: "● Live" once connected, else "Live · connecting…" (one "Live", not two)
  const waiting = stream.resuming ? "reconnecting" : "connecting";
  const state = stream.error ? "stopped" : stream.connected ? "connected" : waiting;
  liveState.dataset.state = state;
  liveState.classList.toggle("live", state === "connected");
  liveState.replaceChildren(
    ...(state === "connected"
      ? [h("span", { class: "dot" }), "Live"]
      : ["Live", h("span", { class: "muted" }, ` · ${state}${state === "stopped" ? "" : "…"}`)]),
  );
  if (stream.error) fail(new GatewayError(stream.errorStatus ?? 0, stream.error));
}

function renderHistory() {
  historyList.replaceChildren(...archive.sessions.map(row));
  historyEmpty.hidden = archive.sessions.length > 0 || archive.loading;
  moreButton.hidden = !archive.nextCursor;
  moreButton.disabled = archive.loading;
}

function fail(err) {
  if (stopped) return;
  if (err instanceof GatewayError && isAuthError(err.status)) {
    stopped = true;
    if (liveStream) liveStream.close();
    showLogin(app, { status: err.status, message: err.message, needs: "an admin token" });
    return;
  }
  problems.replaceChildren(errorBox(err.message ?? String(err), { dataset: { testid: "page-error" } }));
}

const byNewest = (a, b) =>
  (b.startedAt ?? 0) - (a.startedAt ?? 0) || (a.sessionId < b.sessionId ? 1 : a.sessionId > b.sessionId ? -1 : 0);

async function loadHistory(first) {
  const mine = generation;
  archive.loading = true;
  renderHistory();
  try {
    const page = await fetchSessions(API, {
      token,
      type: filters.type || null,
      ticket: filters.ticket || null,
      limit: PAGE_SIZE,
      before: first ? null : archive.nextCursor,
    });
    if (mine !== generation) return;
    const known = new Set(archive.sessions.map((s) => s.sessionId));
    archive.sessions = (first ? [] : archive.sessions).concat(page.sessions.filter((s) => first || !known.has(s.sessionId)));
    archive.nextCursor = page.nextCursor;
    problems.replaceChildren();
  } catch (err) {
    if (mine === generation) fail(err);
  } finally {
    if (mine === generation) {
      archive.loading = false;
      renderHistory();
    }
  }
}

/** A session ended: look for it (and anything else newly archived) in history, soon and a few times more. */
function sessionEnded(sessionId) {
  awaited.set(sessionId, 6);
  refreshSoon(0);
}

function refreshSoon(delay) {
  if (refreshTimer === null) refreshTimer = setTimeout(refreshHistory, delay);
}

/** Put newly archived sessions at the top of history, keeping later pages. */
async function refreshHistory() {
  const mine = generation;
  try {
    const page = await fetchSessions(API, {
      token,
      type: filters.type || null,
      ticket: filters.ticket || null,
      limit: PAGE_SIZE,
    });
    if (mine !== generation) return;
    const known = new Set(archive.sessions.map((s) => s.sessionId));
    const fresh = page.sessions.filter((s) => !known.has(s.sessionId));
    if (fresh.length) {
      archive.sessions = [...fresh, ...archive.sessions].sort(byNewest);
      renderHistory();
    }
    const found = new Set(page.sessions.map((s) => s.sessionId));
    for (const [id, left] of awaited) {
      if (found.has(id) || left <= 1) awaited.delete(id);
      else awaited.set(id, left - 1);
    }
  } catch (err) {
    if (mine === generation) fail(err);
  } finally {
    if (mine === generation) {
      refreshTimer = null;
      if (awaited.size && !stopped) refreshSoon(500);
    }
  }
}

function start() {
  if (stopped) return;
  generation += 1;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  awaited.clear();
  if (liveStream) liveStream.close();
  archive = { sessions: [], nextCursor: null, loading: false };
  problems.replaceChildren();
  liveList.replaceChildren();
  renderHistory();
  liveStream = openLiveSessionsStream(API, {
    token,
    type: filters.type || null,
    onChange: renderLive,
    onEvent: (name, data) => {
      if (name === "ended" && matches(data)) sessionEnded(data.sessionId);
    },
  });
  renderLive(liveStream);
  loadHistory(true);
}

window.addEventListener("pagehide", () => liveStream && liveStream.close());
window.addEventListener("pageshow", (event) => event.persisted && start()); // back from the back/forward cache
start();
