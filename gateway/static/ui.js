// What the sessions pages share: where the gateway is, the token, a tiny DOM builder, badges, the login prompt.

/** The gateway's root, from where this module is served (/static/ui.js): works behind a path prefix too. */
export const API = new URL("../", import.meta.url).href.replace(/\/$/, "");
export const UI = `${API}/ui/`;
export const STATUSES = ["pending", "running", "completed", "error", "cancelled"];
export const SESSION_TYPES = ["ask", "chat", "admin"];

const TOKEN_KEY = "opencode-sessions.token";

/**
 * The token for API calls: `#token=…` in the URL (moved to this tab's sessionStorage and out of the address bar,
 * so it is neither bookmarked nor shown), else what the tab holds, else null (auth off, or the login prompt).
 */
export function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  return sessionStorage.getItem(TOKEN_KEY) || null;
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
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

export function formatTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })} ${time}`;
}

export function timeEl(ms, attrs = {}) {
  return ms ? h("time", { datetime: new Date(ms).toISOString(), ...attrs }, formatTime(ms)) : null;
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
  const held = sessionStorage.getItem(TOKEN_KEY);
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
        setToken(input.value.trim());
        location.reload();
      },
    },
    h("h2", {}, "Sign in"),
    h("p", {}, why),
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
