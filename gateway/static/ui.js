// What the sessions pages share: where the gateway is, the token, a tiny DOM builder, badges, times, copy buttons,
// the login prompt.

import { durationBetween, formatDuration, formatFullTime, formatTime } from "./time.js";

/** The gateway's root, from where this module is served (/static/ui.js): works behind a path prefix too. */
export const API = new URL("../", import.meta.url).href.replace(/\/$/, "");
export const UI = `${API}/ui/`;
export const STATUSES = ["pending", "running", "completed", "error", "cancelled"];
export const SESSION_TYPES = ["ask", "chat", "admin"];

const TOKEN_KEY = "opencode-sessions.token";
let pageToken = null; // the token in this page alone, for a browser that refuses the tab its storage

/** `use(sessionStorage)`, or null where the browser refuses it (the user blocked the site's data: reading
 * `sessionStorage` throws). */
function withStorage(use) {
  try {
    return use(window.sessionStorage);
  } catch {
    return null;
  }
}

/**
 * The token for API calls: `#token=…` in the URL (moved to this tab's sessionStorage and out of the address bar,
 * so it is neither bookmarked nor shown), else what the tab holds, else null (auth off, or the login prompt).
 */
export function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    setToken(fromUrl);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  return heldToken();
}

function heldToken() {
  return withStorage((storage) => storage.getItem(TOKEN_KEY)) || pageToken || null;
}

export function setToken(token) {
  pageToken = token || null;
  withStorage((storage) => (token ? storage.setItem(TOKEN_KEY, token) : storage.removeItem(TOKEN_KEY)));
}

/** Load the page again with `token`: kept by the tab, or, where it keeps nothing, carried in the fragment. */
function reloadWith(token) {
  setToken(token);
  if (token && withStorage((storage) => storage.getItem(TOKEN_KEY)) !== token) {
    location.hash = new URLSearchParams({ token }).toString();
  }
  location.reload();
}

/** h("div", {class: "x", dataset: {id: 1}, onclick}, "text", child, [more]) — children may be null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function statusBadge(status, attrs = {}) {
  const word = status ?? "…";
  return h("span", { class: `badge status status-${word}`, dataset: { status: word }, ...attrs }, word);
}

export function liveBadge(live, attrs = {}) {
  if (live === null || live === undefined) return h("span", { class: "mode", ...attrs }, "connecting…");
  return live
    ? h("span", { class: "mode live", dataset: { mode: "live" }, ...attrs }, h("span", { class: "dot" }), "Live")
    : h("span", { class: "mode archived", dataset: { mode: "archived" }, ...attrs }, "Archived");
}

// C0 controls but tab and newline, DEL, C1 controls, the bidi embeddings, overrides and isolates, and lone
// surrogates: what the CLI writes as escapes too (shared/cli/terminal.py), as they hide or reorder text.
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\p{Cs}/gu;

/** `text` with each character that hides or reorders text as its escape (`\x1b`, `\u202e`): for what a person
 * reads to decide (a command a tool runs or asks to run), so it reads as what it is ("Trojan source"). */
export function visible(text) {
  return String(text ?? "").replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** `value` when it is an array, else none: OpenCode's values are read as its schema says, and may be otherwise. */
export function listOf(value) {
  return Array.isArray(value) ? value : [];
}

/** `value` when it is an object (not an array), else an empty one. */
export function objectOf(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
}

/** A time in the browser's locale (with its date when not today), the full date and time on hover. */
export function timeEl(ms, attrs = {}) {
  if (typeof ms !== "number" || !ms || Number.isNaN(new Date(ms).getTime())) return null;
  return h("time", { datetime: new Date(ms).toISOString(), title: formatFullTime(ms), ...attrs }, formatTime(ms));
}

/** A duration ("4.2 s", "3 min 5 s"), or null when there is none to show. */
export function durationEl(ms, attrs = {}) {
  const text = formatDuration(ms);
  return text ? h("span", { class: "duration", ...attrs }, text) : null;
}

/** How long an ended session (a list row's summary) took; null while it is live. */
export function tookEl(summary) {
  if (summary.live !== false) return null;
  const took = durationBetween(summary.startedAt, summary.completedAt || summary.updatedAt);
  return durationEl(took, { class: "duration muted", title: "took", dataset: { testid: "took" } });
}

/** "1 message", "2 messages". */
export function countOf(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * A small button copying `text` (an id) to the clipboard; it says "copied" for a moment. Outside a secure context
 * (plain http to a host other than localhost) the Clipboard API is missing: a selected textarea is copied instead.
 */
export function copyButton(text, { label = "id", ...attrs } = {}) {
  const button = h(
    "button",
    { type: "button", class: "copy", title: `Copy ${label}`, "aria-label": `Copy ${label} ${text}`, ...attrs },
    "copy",
  );
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    event.stopPropagation();
    const done = await copyText(text);
    button.textContent = done ? "copied" : "copy failed";
    button.classList.toggle("done", done);
    clearTimeout(button._reset);
    button._reset = setTimeout(() => {
      button.textContent = "copy";
      button.classList.remove("done");
    }, 1500);
  });
  return button;
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // refused (no permission, no focus): try the old way
  }
  const area = h("textarea", { class: "copy-source", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  } finally {
    area.remove();
  }
}

export const sessionHref = (id) => `${UI}sessions/${encodeURIComponent(id)}`;
export const ticketHref = (id) => `${UI}tickets/${encodeURIComponent(id)}`;

export function ticketLink(ticketId) {
  return ticketId ? h("a", { class: "ticket", href: ticketHref(ticketId), title: "Ticket" }, ticketId) : null;
}

/** The top bar's right side: whether a token is held, and a way to drop it. */
export function renderAuthNav(token) {
  const nav = document.getElementById("auth");
  if (!nav) return;
  if (!token) {
    nav.replaceChildren();
    return;
  }
  const forget = () => {
    setToken(null);
    location.reload();
  };
  nav.replaceChildren(
    h(
      "span",
      { class: "muted" },
      "token set · ",
      h("button", { type: "button", class: "link", dataset: { testid: "sign-out" }, onclick: forget }, "forget"),
    ),
  );
}

/**
 * Replace `container` with a prompt for a gateway token (401: none or expired; 403: one of another scope).
 * Submitting keeps the token in this tab and reloads the page.
 */
export function showLogin(container, { status, message, needs = "a gateway token" } = {}) {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    required: true,
    placeholder: "eyJ…",
    dataset: { testid: "token-input" },
  });
  const held = heldToken();
  const why =
    status === 403
      ? `This token does not cover this page (${message}). Use ${needs}.`
      : held
        ? `The gateway refused the token (${message}). Use ${needs}.`
        : `This gateway needs ${needs}.`;
  const form = h(
    "form",
    {
      class: "login card",
      dataset: { testid: "login" },
      onsubmit: (event) => {
        event.preventDefault();
        reloadWith(input.value.trim());
      },
    },
    h("h2", {}, "Sign in"),
    h("p", {}, why),
    status === 403 ? scopeHint(held) : null,
    h(
      "p",
      { class: "muted" },
      "The host app's backend mints tokens (opencode-sessions token --admin | --ticket ID | --session ID); ",
      "a link may also carry one as #token=….",
    ),
    h("label", {}, "Token ", input),
    h("button", { type: "submit", dataset: { testid: "token-submit" } }, "Sign in"),
  );
  container.replaceChildren(form);
  input.focus();
}

/**
 * What a held token does cover, as a link: the ticket's or the session's page. The scope is read from the JWT's
 * `sub` claim without checking the signature, which only the gateway can do; it only picks where the link goes.
 */
function scopeHint(token) {
  const [kind, id] = tokenSubject(token).split(":");
  if (!id || (kind !== "ticket" && kind !== "session")) return null;
  const href = kind === "ticket" ? ticketHref(id) : sessionHref(id);
  return h(
    "p",
    { dataset: { testid: "token-scope" } },
    `The token held covers ${kind} `,
    h("a", { href, dataset: { testid: "token-scope-link" } }, id),
    `: open the ${kind}'s page.`,
  );
}

function tokenSubject(token) {
  try {
    const payload = (token ?? "").split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const sub = JSON.parse(atob(payload)).sub;
    return typeof sub === "string" ? sub : "";
  } catch {
    return "";
  }
}

/** `?limit=` of a page (1-100), else the default. */
export function pageSize(raw, fallback) {
  const n = Number.parseInt(raw ?? "", 10);
  return Number.isInteger(n) && n >= 1 && n <= 100 ? n : fallback;
}

export function isAuthError(status) {
  return status === 401 || status === 403;
}

export function errorBox(message, attrs = {}) {
  return h("div", { class: "banner error", role: "alert", ...attrs }, message);
}
