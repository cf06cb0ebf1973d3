// One session, live: its id, status word, live/archived mode, messages and parts as they appear, tool calls with
// their status, titles, output and durations, answers as markdown, reasoning collapsed, errors shown, and
// "Resuming session…" while reconnecting. Used by the session page and the ticket page.

import { renderMarkdown } from "./markdown.js";
import { openSessionStream } from "./opencode-stream.js";
import { durationBetween } from "./time.js";
import { API, copyButton, durationEl, h, listOf, liveBadge, statusBadge, ticketLink, timeEl, visible } from "./ui.js";

const HIDDEN_PARTS = new Set(["step-start", "step-finish", "snapshot"]);
const RENDER_EVERY_MS = 100; // at most ten renders a second of a live session, the first at once

export class SessionView {
  /**
   * `root`: the element to render into. Options: token; onChange(stream) after each render; onFatal(stream)
   * when the stream stopped on an HTTP error (401/403/404…: `errorStatus`); onComplete(stream) once archived.
   */
  constructor(root, options = {}) {
    this.root = root;
    this.options = options;
    this.stream = null;
    this.sessionId = null;
    this._messages = new Map(); // message id -> {el, message, live}: the element and what it shows
    this._openReasoning = new Set();
    this._completeSeen = false;
  }

  open(sessionId) {
    this.close();
    this.sessionId = sessionId;
    this._messages.clear();
    this._completeSeen = false;
    this._build();
    this.stream = openSessionStream(API, sessionId, {
      token: this.options.token,
      onChange: (stream) => this._renderSoon(stream),
    });
    this._render(this.stream);
    return this;
  }

  close() {
    if (this.stream) this.stream.close();
    this.stream = null;
    this._tick(false);
  }

  /**
   * Render now, or once RENDER_EVERY_MS has passed since the last render, whatever came meanwhile in one render.
   * Was: one render per event, so each append to a long streaming answer parsed, sanitised and highlighted its
   * whole markdown again (a 100 KB answer: ~10 ms a time, tens of appends a second).
   */
  _renderSoon(stream) {
    this._due = stream;
    if (this._timer) return;
    const wait = Math.max(0, (this._renderedAt ?? -Infinity) + RENDER_EVERY_MS - performance.now());
    this._timer = setTimeout(() => {
      this._timer = null;
      this._renderedAt = performance.now();
      this._render(this._due);
    }, wait);
  }

  /** While the session is live, its duration counts up each second. */
  _tick(on) {
    if (on && !this._ticker) this._ticker = setInterval(() => this._showDuration(), 1000);
    if (!on && this._ticker) {
      clearInterval(this._ticker);
      this._ticker = null;
    }
  }

  _showDuration() {
    const s = this.stream && this.stream.session;
    const ended = s && s.live === false ? s.completedAt || s.updatedAt : null;
    const took = s ? durationBetween(s.startedAt, ended) : null;
    const shown = durationEl(took, { dataset: { testid: "session-duration" }, title: ended ? "took" : "so far" });
    this.el.duration.replaceChildren(shown ? " · " : "", shown ?? "");
  }

  _build() {
    const sid = this.sessionId;
    this.el = {
      title: h("h1", { class: "session-title", dataset: { testid: "session-title" } }, "Session"),
      id: h("code", { class: "session-id", dataset: { testid: "session-id" } }, sid),
      copy: copyButton(sid, { label: "session id", dataset: { testid: "copy-session-id" } }),
      status: h("span", {}),
      mode: h("span", {}),
      type: h("span", { class: "tag", dataset: { testid: "session-type" } }),
      ticket: h("span", {}),
      started: h("span", { class: "muted" }),
      duration: h("span", { class: "muted" }),
      resuming: h(
        "div",
        { class: "banner resuming", role: "status", dataset: { testid: "resuming" }, hidden: true },
        h("span", { class: "spinner" }),
        "Resuming session…",
      ),
      error: h("div", { class: "banner error", role: "alert", dataset: { testid: "session-error" }, hidden: true }),
      empty: h("p", { class: "muted empty" }, "Connecting…"),
      transcript: h("ol", { class: "transcript", dataset: { testid: "messages" } }),
      footer: h("footer", { class: "session-foot muted", dataset: { testid: "session-foot" } }),
    };
    const e = this.el;
    const when = h("span", {}, e.started, e.duration); // "started 14:03 · 12 s"
    this.article = h(
      "article",
      { class: "session", dataset: { testid: "session-view", sessionId: sid } },
      h(
        "header",
        { class: "session-head" },
        e.title,
        h("div", { class: "meta" }, e.id, e.copy, e.status, e.mode, e.type, e.ticket, when),
      ),
      e.resuming,
      e.error,
      e.empty,
      e.transcript,
      e.footer,
    );
    this.root.replaceChildren(this.article);
  }

  _render(stream) {
    if (stream !== this.stream) return;
    const e = this.el;
    const s = stream.session;
    const gone = !s && stream.errorStatus !== null; // never loaded: 404, or refused
    const placeholder = gone ? `Session ${unreachable(stream)}` : "Session";
    e.title.textContent = s ? s.title || firstPrompt(s) || "Untitled session" : placeholder;
    e.status.replaceChildren(statusBadge(stream.status, { dataset: { testid: "session-status" } }));
    e.status.hidden = gone;
    e.mode.replaceChildren(
      gone
        ? h("span", { class: "mode gone", dataset: { testid: "live-indicator", mode: "gone" } }, unreachable(stream))
        : liveBadge(stream.live, { dataset: { testid: "live-indicator" } }),
    );
    e.type.textContent = s ? s.sessionType : "";
    e.type.hidden = !s;
    e.ticket.replaceChildren(s ? ticketLink(s.ticketId) ?? "" : "");
    e.ticket.hidden = !(s && s.ticketId);
    e.started.replaceChildren(s && s.startedAt ? "started " : "", s ? timeEl(s.startedAt) ?? "" : "");
    this._showDuration();
    this._tick(Boolean(s && s.live !== false && !stream.completed && !stream.closed));
    e.resuming.hidden = !stream.resuming;
    e.error.hidden = !stream.error;
    e.error.textContent = stream.error ?? "";
    this.article.dataset.status = stream.status ?? "";
    this.article.dataset.live = stream.live === null ? "" : String(stream.live);
    this._renderMessages(stream);
    if (s) {
      e.empty.hidden = s.messages.length > 0;
      e.empty.textContent = s.live ? "No messages yet." : "No messages.";
    } else {
      e.empty.hidden = Boolean(stream.error);
      e.empty.textContent = "Connecting…";
    }
    e.footer.replaceChildren(
      s && s.updatedAt ? (s.live !== false ? "last change " : "ended ") : "",
      s ? timeEl(s.updatedAt) ?? "" : "",
    );
    if (this.options.onChange) this.options.onChange(stream);
    if (stream.errorStatus !== null && this.options.onFatal) this.options.onFatal(stream); // 401, 403, 404…
    if (stream.completed && !this._completeSeen) {
      this._completeSeen = true;
      if (this.options.onComplete) this.options.onComplete(stream);
    }
  }

  _renderMessages(stream) {
    const list = this.el.transcript;
    const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    const live = stream.live !== false;
    const seen = new Set();
    let previous = null;
    for (const message of stream.messages) {
      const id = message.info.id;
      seen.add(id);
      let entry = this._messages.get(id);
      // An update keeps the messages it leaves alone (the same objects): only the others are compared, so an
      // event costs what it changed, not the whole transcript.
      if (!entry || entry.live !== live || (entry.message !== message && !sameJson(entry.message, message))) {
        const el = this._message(message, live);
        if (entry) entry.el.replaceWith(el);
        entry = { el };
        this._messages.set(id, entry);
      }
      Object.assign(entry, { message, live });
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== entry.el) list.insertBefore(entry.el, expected);
      previous = entry.el;
    }
    for (const [id, entry] of this._messages) {
      if (!seen.has(id)) {
        entry.el.remove();
        this._messages.delete(id);
      }
    }
    if (nearBottom && live && stream.messages.length) window.scrollTo(0, document.body.scrollHeight);
  }

  _message(message, live) {
    const info = message.info;
    const role = info.role ?? "assistant";
    const finished = Boolean(info.time && info.time.completed) || !live;
    const detail = role === "assistant" ? [info.agent, info.modelID].filter(Boolean).join(" · ") : "";
    const answered = role === "assistant" && info.time && info.time.completed;
    const took = answered ? info.time.completed - info.time.created : null;
    const parts = message.parts
      .filter((p) => !HIDDEN_PARTS.has(p.type))
      .map((part) => this._part(part, { finished, role }));
    if (role === "assistant" && !finished && parts.length === 0) {
      parts.push(h("div", { class: "part text" }, writing()));
    }
    return h(
      "li",
      { class: `message role-${role}`, dataset: { messageId: info.id, role } },
      h(
        "div",
        { class: "message-head" },
        h("span", { class: "role" }, role === "user" ? "User" : "Assistant"),
        detail ? h("span", { class: "muted" }, detail) : null,
        timeEl(info.time && info.time.created, { class: "muted" }),
        durationEl(took, { class: "duration muted", title: "answered in" }),
      ),
      parts,
      info.error ? h("div", { class: "banner error", dataset: { testid: "message-error" } }, errorText(info.error)) : null,
    );
  }

  _part(part, { finished, role }) {
    const base = { dataset: { partId: part.id, partType: part.type } };
    const ended = role !== "assistant" || finished || Boolean(part.time && part.time.end);
    switch (part.type) {
      case "text": {
        if (part.ignored) return null;
        // Polled, OpenCode stores a streaming text part as "" until it ends: "writing…" until then. With the
        // poller's event fast path the text grows as it streams: shown with a caret until the part ends.
        const pending = !part.text && !ended;
        const streaming = Boolean(part.text) && !ended;
        return h(
          "div",
          { class: `part text${pending ? " pending" : ""}${streaming ? " streaming" : ""}`, ...base },
          pending ? writing() : textBody(part.text, role === "assistant"),
        );
      }
      case "reasoning": {
        const details = h(
          "details",
          { class: "part reasoning", ...base, open: this._openReasoning.has(part.id) },
          h("summary", {}, "Reasoning", !ended ? h("span", { class: "muted" }, " · thinking…") : null),
          part.text ? textBody(part.text, true) : h("div", { class: "text-body" }, ended ? "" : "…"),
        );
        details.addEventListener("toggle", () => {
          if (details.open) this._openReasoning.add(part.id);
          else this._openReasoning.delete(part.id);
        });
        return details;
      }
      case "tool":
        return toolCall(part, base);
      case "file":
        return h("div", { class: "part file", ...base }, "📎 ", part.filename || part.url || "file", " ",
          h("span", { class: "muted" }, part.mime ?? ""));
      case "agent":
        return h("div", { class: "part other", ...base }, `@${part.name ?? "agent"}`);
      case "subtask":
        return h("div", { class: "part other", ...base }, "Subtask: ", part.description ?? part.prompt ?? "");
      case "patch":
        return h("div", { class: "part other", ...base }, "Changed: ", listOf(part.files).join(", "));
      case "retry":
        return h("div", { class: "part other", ...base }, `Retry ${part.attempt ?? ""}: `, errorText(part.error));
      default:
        return h("div", { class: "part other muted", ...base }, part.type);
    }
  }
}

/** Whether two JSON values are equal: a re-sync's snapshot repeats most messages as new objects. */
function sameJson(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]));
}

/** A title for a session without one: its first prompt, shortened. */
function firstPrompt(session) {
  const first = session.messages.find((m) => m.info.role === "user");
  const text = first && first.parts.find((p) => p.type === "text" && p.text);
  if (!text) return "";
  const line = text.text.trim().split("\n")[0];
  return line.length > 80 ? `${line.slice(0, 77)}…` : line;
}

/** An answer as markdown; a prompt as typed (people write plain text, and `*` or `_` mean what they say). */
function textBody(text, markdown) {
  return markdown
    ? h("div", { class: "text-body markdown" }, renderMarkdown(text ?? ""))
    : h("div", { class: "text-body" }, text ?? "");
}

/** Why a session that never loaded is not shown: the badge and title say it plainly. */
function unreachable(stream) {
  return stream.errorStatus === 404 ? "not found" : "unavailable";
}

function writing() {
  return h("span", { class: "writing", dataset: { testid: "writing" } }, "writing…");
}

function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  const message = error.data && error.data.message ? error.data.message : JSON.stringify(error.data ?? error);
  return error.name ? `${error.name}: ${message}` : message;
}

/** How long a finished tool call ran (OpenCode's state.time), else null. */
function toolTime(state) {
  const time = state.time ?? {};
  return time.start && time.end ? time.end - time.start : null;
}

function toolCall(part, base) {
  const state = part.state ?? {};
  const status = state.status ?? "pending";
  const input = state.input ?? {};
  const title = state.title || input.command || input.filePath || input.description || input.pattern || "";
  const output = typeof state.output === "string" ? state.output : state.metadata && state.metadata.output;
  const shownInput =
    part.tool === "bash" && typeof input.command === "string"
      ? `$ ${input.command}`
      : Object.keys(input).length
        ? JSON.stringify(input, null, 2)
        : "";
  return h(
    "div",
    {
      class: `part tool tool-${status}`,
      dataset: { ...base.dataset, testid: "tool-call", toolStatus: status, tool: part.tool ?? "" },
    },
    h(
      "div",
      { class: "tool-head" },
      h("span", { class: "tool-name" }, visible(part.tool ?? "tool")),
      statusBadge(status, { dataset: { testid: "tool-status" } }),
      title ? h("span", { class: "tool-title", dataset: { testid: "tool-title" } }, visible(title)) : null,
      durationEl(toolTime(state), { class: "duration muted", dataset: { testid: "tool-duration" }, title: "ran for" }),
    ),
    shownInput && shownInput !== `$ ${title}` ? h("pre", { class: "tool-input" }, visible(shownInput)) : null,
    output ? h("pre", { class: "tool-output", dataset: { testid: "tool-output" } }, output) : null,
    status === "pending" || status === "running"
      ? h("div", { class: "muted tool-wait" }, status === "pending" ? "preparing…" : "running…")
      : null,
    state.error ? h("div", { class: "banner error", dataset: { testid: "tool-error" } }, state.error) : null,
  );
}
