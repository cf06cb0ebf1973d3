// opencode-stream.js — a dependency-free ES module for the OpenCode Session Layer gateway.
//
//   import { openSessionStream } from "https://gateway.example/static/opencode-stream.js";
//   const stream = openSessionStream("https://gateway.example", "ses_…", {
//     token,                                   // optional: sent as ?token= (EventSource cannot set headers)
//     onChange(s) { render(s.messages, s.toolCalls, s.status, s.error, s.live, s.resuming); },
//   });
//   …
//   stream.close();
//
// The stream keeps the session object the gateway's SSE protocol describes (README: "SSE protocol"): it applies
// `snapshot` and `update` events by `seq` (whole parts, or text appended at an offset), re-syncs (a fresh snapshot)
// when it sees a gap or an append that does not fit, reconnects with
// exponential backoff and `lastEventId` after a drop, stops at `complete` (the archived session) and on a fatal
// error (401/403/404, or the server's `error` event), and closes cleanly. No framework, no build step.
// A stream ends with its token (`token-expired`): give `refreshToken` (a function returning a fresh token, or a
// promise of one) and it resumes where it was with the new token; without it the stream stops (errorStatus 401).

const DEFAULT_MIN_BACKOFF_MS = 250;
const DEFAULT_MAX_BACKOFF_MS = 10_000;
// The gateway sends `ping` every 15 s: a connection silent for longer than this is dead (a half-open TCP
// connection raises no error by itself), so it is dropped and resumed.
const DEFAULT_HEARTBEAT_TIMEOUT_MS = 45_000;
const FATAL_STATUSES = new Set([400, 401, 403, 404]);

/** An HTTP error from the gateway: `status` and the gateway's `{error}` message. */
export class GatewayError extends Error {
  constructor(status, message, detail = null) {
    super(message);
    this.name = "GatewayError";
    this.status = status;
    this.detail = detail;
  }
}

function trimBase(baseUrl) {
  return String(baseUrl ?? "").replace(/\/+$/, "");
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** GET a gateway path as JSON; the token goes in the Authorization header. Throws GatewayError. */
export async function fetchJson(baseUrl, path, { token, fetch: fetchImpl, signal } = {}) {
  const doFetch = fetchImpl ?? globalThis.fetch;
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await doFetch(`${trimBase(baseUrl)}${path}`, { headers, signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new GatewayError(0, `gateway unreachable: ${err && err.message ? err.message : err}`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new GatewayError(response.status, message, body ? body.detail ?? null : null);
  }
  return body;
}

/** GET /sessions/{id}: the live state, else the archived row. */
export function fetchSession(baseUrl, sessionId, options = {}) {
  return fetchJson(baseUrl, `/sessions/${encodeURIComponent(sessionId)}`, options);
}

/** GET /tickets/{t}/active: the ticket's live session, or null when it has none (404). */
export async function fetchActiveSession(baseUrl, ticketId, options = {}) {
  try {
    return await fetchJson(baseUrl, `/tickets/${encodeURIComponent(ticketId)}/active`, options);
  } catch (err) {
    if (err instanceof GatewayError && err.status === 404) return null;
    throw err;
  }
}

/** GET /tickets/{t}/sessions: `{sessions, nextCursor}`, newest first; pass `before: nextCursor` for the next page. */
export function fetchTicketHistory(baseUrl, ticketId, { limit, before, messages, ...options } = {}) {
  const path = `/tickets/${encodeURIComponent(ticketId)}/sessions${query({ limit, before, messages })}`;
  return fetchJson(baseUrl, path, options);
}

/** GET /tickets/{t}/usage: `{ticketId, total, sessions: [{sessionId, status, live, usage, …}]}`. */
export function fetchTicketUsage(baseUrl, ticketId, options = {}) {
  return fetchJson(baseUrl, `/tickets/${encodeURIComponent(ticketId)}/usage`, options);
}

/** GET /sessions (admin): `live: true` for the live index, else archived sessions filtered by `type` / `ticket`. */
export function fetchSessions(baseUrl, { live, type, ticket, limit, before, messages, ...options } = {}) {
  const params = live ? { live: "true", type } : { type, ticket, limit, before, messages };
  return fetchJson(baseUrl, `/sessions${query(params)}`, options);
}

function byId(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The session after one `update` (the change from `seq-1` to `seq`), without touching `state`: a new object,
 * in which unchanged messages keep their identity (cheap to diff for a UI). OpenCode orders messages and parts by
 * id; so does this.
 */
export function applyUpdate(state, change) {
  const next = { ...state, ...(change.state ?? {}), seq: change.seq };
  const messages = new Map(state.messages.map((m) => [m.info.id, m]));
  const touched = new Set();
  const edit = (id) => {
    let message = messages.get(id);
    if (!touched.has(id)) {
      message = message ? { info: message.info, parts: message.parts.slice() } : { info: { id }, parts: [] };
      messages.set(id, message);
      touched.add(id);
    }
    return message;
  };
  for (const info of change.messages ?? []) edit(info.id).info = info;
  for (const part of change.parts ?? []) {
    const message = edit(part.messageID);
    const at = message.parts.findIndex((p) => p.id === part.id);
    if (at >= 0) message.parts[at] = part;
    else message.parts.push(part);
  }
  for (const append of change.appends ?? []) {
    const message = edit(append.messageID);
    const at = message.parts.findIndex((p) => p.id === append.partID);
    const held = at >= 0 ? heldText(message.parts[at], append.field) : null;
    if (held === null || !appendShaped(append) || held.length !== append.offset) {
      throw new RangeError(`an append at ${append.offset} to part ${append.partID} does not fit (see appendsFit)`);
    }
    message.parts[at] = { ...(append.part ?? message.parts[at]), [append.field]: held + append.delta };
  }
  for (const id of change.removedMessages ?? []) messages.delete(id);
  for (const removed of change.removedParts ?? []) {
    if (!messages.has(removed.messageID)) continue;
    const message = edit(removed.messageID);
    message.parts = message.parts.filter((p) => p.id !== removed.id);
  }
  for (const id of touched) {
    const message = messages.get(id);
    if (message) message.parts.sort((a, b) => byId(a.id, b.id));
  }
  next.messages = [...messages.keys()].sort(byId).map((id) => messages.get(id));
  return next;
}

// An append extends a text: it never renames a part, moves it, or changes its kind by way of `field`.
const FIXED_FIELDS = new Set(["id", "messageID", "sessionID", "type", "__proto__"]);

/** The part's `field` as text ("" when absent), or null when it holds something else (an append cannot fit). */
function heldText(part, field) {
  if (typeof field !== "string" || FIXED_FIELDS.has(field)) return null;
  const value = Object.hasOwn(part, field) ? part[field] : undefined;
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : null;
}

/** An append as the protocol writes one: `length` is `offset` + the delta's length (a client that took a
 * different delta would hold another text), and a `part` it carries is the same part (same id and message). */
function appendShaped(append) {
  if (typeof append.delta !== "string" || !Number.isInteger(append.offset)) return false;
  if (append.length !== append.offset + append.delta.length) return false;
  const part = append.part;
  if (part === undefined || part === null) return true;
  return typeof part === "object" && !Array.isArray(part) && part.id === append.partID
    && part.messageID === append.messageID;
}

/**
 * True when every append of an `update` starts where the text held for its part ends (`offset` is a length in
 * UTF-16 code units, JavaScript's `length`; parts the same update upserts count as held, as `applyUpdate` applies
 * them first), has the `length` that makes, and keeps its part's identity. False means the client is out of step:
 * re-sync by snapshot. Exactly when `applyUpdate` would throw.
 */
export function appendsFit(state, change) {
  if (!(change.appends ?? []).length) return true;
  try {
    applyUpdate(state, change);
    return true;
  } catch {
    return false;
  }
}

/** Every tool call of the session, in transcript order: `{id, messageID, callID, tool, status, title, input, output,
 * error, time, part}`; `output` is the streamed `metadata.output` while the tool runs. */
export function toolCallsOf(messages) {
  const calls = [];
  for (const message of messages ?? []) {
    for (const part of message.parts ?? []) {
      if (part.type !== "tool") continue;
      const state = part.state ?? {};
      const streamed = state.metadata && typeof state.metadata.output === "string" ? state.metadata.output : null;
      calls.push({
        id: part.id,
        messageID: part.messageID,
        callID: part.callID ?? null,
        tool: part.tool ?? null,
        status: state.status ?? "pending",
        title: state.title ?? null,
        input: state.input ?? {},
        output: typeof state.output === "string" ? state.output : streamed,
        error: state.error ?? null,
        time: state.time ?? null,
        part,
      });
    }
  }
  return calls;
}

function backoffDelay(attempt, minMs, maxMs, random) {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

function parseData(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return undefined;
  }
}

class Reconnecting {
  // What both streams share: one EventSource at a time, backoff between attempts, a probe of the plain JSON
  // endpoint when a connection fails before it opened (EventSource hides the HTTP status), and close().
  constructor(options) {
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    if (typeof this._EventSource !== "function") throw new Error("no EventSource: pass options.EventSource");
    this._fetch = options.fetch;
    this._token = options.token || null;
    this._refreshToken = typeof options.refreshToken === "function" ? options.refreshToken : null;
    this.tokenRefreshes = 0;
    this._onChange = typeof options.onChange === "function" ? options.onChange : null;
    this._minMs = options.minBackoffMs ?? DEFAULT_MIN_BACKOFF_MS;
    this._maxMs = options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this._random = options.random ?? Math.random;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? ((id) => clearTimeout(id));
    this._now = options.now ?? (() => Date.now());
    this._heartbeatMs = options.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    this._es = null;
    this._timer = null;
    this._watchdog = null;
    this._lastEventAt = 0;
    this._attempt = 0;
    this._stopped = false; // completed, or a fatal error: no more reconnects
    this._streamError = null;
    this.errorStatus = null; // the HTTP status behind a fatal error (401, 403, 404, …), when there is one
    this.connected = false;
    this.resuming = false;
    this.closed = false;
    this.error = null;
    this.reconnects = 0;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this.resuming = false;
    this._drop();
  }

  _drop() {
    if (this._timer !== null) {
      this._clearTimeout(this._timer);
      this._timer = null;
    }
    if (this._watchdog !== null) {
      this._clearTimeout(this._watchdog);
      this._watchdog = null;
    }
    if (this._es) {
      const es = this._es;
      this._es = null;
      es.onopen = null;
      es.onerror = null;
      es.close();
    }
  }

  _emit() {
    if (!this.closed && this._onChange) {
      try {
        this._onChange(this);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  _open(url, listeners) {
    this._drop();
    const es = new this._EventSource(url);
    this._es = es;
    let opened = false;
    es.onopen = () => {
      if (this._es !== es) return;
      opened = true;
      this.connected = true;
      this._heard(es);
      this._opened();
    };
    es.onerror = (event) => {
      if (this._es !== es) return;
      if (event && typeof event.data === "string") return; // the server's `error` event: its own listener
      this._lost(opened);
    };
    for (const [name, handle] of Object.entries(listeners)) {
      es.addEventListener(name, (event) => {
        if (this._es !== es || this.closed) return;
        // an event from the server (data, unlike a connection error), not the open, resets the backoff: a
        // connection dropped as soon as it opens still backs off
        if (typeof event.data === "string") this._attempt = 0;
        this._heard(es);
        handle(event);
      });
    }
  }

  /** Something arrived on `es`: arm the watchdog that drops a connection gone silent (one timer, re-armed
   * lazily: it fires at most once per heartbeat period, whatever the event rate). */
  _heard(es) {
    this._lastEventAt = this._now();
    if (this._heartbeatMs <= 0 || this._watchdog !== null) return;
    const check = () => {
      this._watchdog = null;
      if (this._es !== es || this.closed) return;
      const silent = this._now() - this._lastEventAt;
      if (silent >= this._heartbeatMs) this._lost(true);
      else this._watchdog = this._setTimeout(check, this._heartbeatMs - silent);
    };
    this._watchdog = this._setTimeout(check, this._heartbeatMs);
  }

  _opened() {
    this._emit();
  }

  _fatal(message, status = null) {
    this._streamError = message;
    this.errorStatus = status;
    this._stopped = true;
    this.connected = false;
    this.resuming = false;
    this._drop();
    this._refresh();
    this._emit();
  }

  _refresh() {
    this.error = this._streamError;
  }

  /** The gateway ended the stream at its token's expiry: resume with a fresh token, or stop (401). */
  _onTokenExpired() {
    this._drop();
    if (this.closed || this._stopped) return;
    this.connected = false;
    this._beforeRetry();
    this._emit();
    this._renewToken().then((renewed) => {
      if (this.closed || this._stopped) return;
      if (renewed) this._connect();
      else this._fatal("token expired", 401);
    });
  }

  /** Ask the app for a fresh token (options.refreshToken); true when it gave one. */
  async _renewToken() {
    if (!this._refreshToken) return false;
    let token = null;
    try {
      token = await this._refreshToken();
    } catch {
      return false;
    }
    if (!token || this.closed) return false;
    this._token = String(token);
    this.tokenRefreshes += 1;
    return true;
  }

  _lost(opened) {
    this._drop();
    if (this.closed || this._stopped) return;
    this.connected = false;
    this._beforeRetry();
    this._emit();
    const delay = backoffDelay(this._attempt, this._minMs, this._maxMs, this._random);
    this._attempt += 1;
    this._schedule(delay, !opened);
  }

  _schedule(delay, probe) {
    this._timer = this._setTimeout(async () => {
      this._timer = null;
      if (this.closed || this._stopped) return;
      if (probe) {
        try {
          await this._probe();
        } catch (err) {
          if (err instanceof GatewayError && FATAL_STATUSES.has(err.status)) {
            // a token that expired while disconnected: renew it if the app can, then go on
            const renewed = err.status === 401 && (await this._renewToken());
            if (!renewed) {
              if (!this.closed) this._fatal(err.message, err.status);
              return;
            }
          }
        }
        if (this.closed || this._stopped || this._timer !== null || this._es) return;
      }
      this.reconnects += 1;
      this._connect();
    }, delay);
  }
}

/**
 * Follow one session. Returns the stream object, whose fields are kept current:
 *   session    the whole session object (null until the first snapshot)
 *   messages   [{info, parts}], OpenCode's transcript      toolCalls  every tool call (toolCallsOf)
 *   status     pending | running | completed | error | cancelled (null before the first snapshot)
 *   error      the session's error, or why the stream stopped (401/403/404, …); null otherwise
 *   live       true while the session is live, false once archived (null before the first snapshot)
 *   pending    the requests the run waits on (status `waiting`): [{kind, id, askedAt, tool, ...}], else []
 *   resuming   true while it reconnects or re-syncs after a drop
 *   connected, completed, closed, seq
 * and `close()`. `onChange(stream)` is called after every change. Options: token, onChange, EventSource, fetch,
 * minBackoffMs, maxBackoffMs (reconnect delays: doubling, with jitter), heartbeatTimeoutMs (45 s: a connection
 * silent that long is dropped and resumed; 0 turns it off), refreshToken (called when the token expires, or is
 * refused on a reconnect: return a fresh token, or a promise of one, to resume; null stops with errorStatus 401).
 */
export function openSessionStream(baseUrl, sessionId, options = {}) {
  return new SessionStream(baseUrl, sessionId, options);
}

class SessionStream extends Reconnecting {
  constructor(baseUrl, sessionId, options) {
    super(options);
    this.baseUrl = trimBase(baseUrl);
    this.sessionId = sessionId;
    this.session = null;
    this.completed = false;
    this.resyncs = 0;
    this._resyncAttempt = 0;
    this._sessionError = null;
    this._needSnapshot = true;
    this._refresh();
    this._connect();
  }

  get seq() {
    return this.session ? this.session.seq : null;
  }

  get status() {
    return this.session ? this.session.status : null;
  }

  get live() {
    return this.session ? this.session.live !== false : null;
  }

  get pending() {
    return this.session && Array.isArray(this.session.pending) ? this.session.pending : [];
  }

  /** A plain copy of the public state, e.g. for a React state update. */
  snapshot() {
    return {
      session: this.session,
      messages: this.messages,
      toolCalls: this.toolCalls,
      status: this.status,
      error: this.error,
      live: this.live,
      resuming: this.resuming,
      connected: this.connected,
      completed: this.completed,
      seq: this.seq,
      pending: this.pending,
    };
  }

  _refresh() {
    this.messages = this.session ? this.session.messages ?? [] : [];
    this.toolCalls = toolCallsOf(this.messages);
    this.error = this._streamError ?? (this.session ? this.session.error ?? null : null);
  }

  _beforeRetry() {
    this.resuming = this.session !== null;
  }

  _connect() {
    const params = { token: this._token };
    if (this.session && !this._needSnapshot) params.lastEventId = this.session.seq;
    const url = `${this.baseUrl}/sessions/${encodeURIComponent(this.sessionId)}/stream${query(params)}`;
    this._open(url, {
      snapshot: (event) => this._onSnapshot(event),
      update: (event) => this._onUpdate(event),
      complete: (event) => this._onComplete(event),
      error: (event) => this._onServerError(event),
      "token-expired": () => this._onTokenExpired(),
      ping: () => {},
    });
  }

  _probe() {
    return fetchSession(this.baseUrl, this.sessionId, { token: this._token, fetch: this._fetch });
  }

  _opened() {
    // A resume at the current seq gets no snapshot: being connected again is the end of resuming.
    if (!this._needSnapshot) this.resuming = false;
    this._emit();
  }

  _setSession(session) {
    this.session = session;
    this._refresh();
  }

  _onSnapshot(event) {
    const data = parseData(event);
    if (!data || typeof data.seq !== "number") return this._resync("bad snapshot");
    this._needSnapshot = false;
    this.resuming = false;
    this.connected = true;
    this._setSession(data);
    this._emit();
  }

  _onUpdate(event) {
    const change = parseData(event);
    if (!change || typeof change.seq !== "number") return this._resync("bad update");
    if (!this.session || this._needSnapshot) return this._resync("update before snapshot");
    if (change.seq <= this.session.seq) return; // already held
    if (change.seq !== this.session.seq + 1) return this._resync("gap");
    let next;
    try {
      next = applyUpdate(this.session, change); // throws when an append does not fit (or the update is malformed)
    } catch {
      return this._resync("append offset");
    }
    this._setSession(next);
    this._resyncAttempt = 0;
    this._emit();
  }

  _onComplete(event) {
    const data = parseData(event);
    if (data && typeof data === "object") this._setSession({ ...data, live: false });
    else if (this.session) this._setSession({ ...this.session, live: false });
    this.completed = true;
    this.connected = false;
    this.resuming = false;
    this._stopped = true;
    this._drop();
    this._emit();
  }

  _onServerError(event) {
    if (typeof event.data !== "string") return; // a connection error: onerror handles it
    const data = parseData(event);
    this._fatal(data && data.error ? String(data.error) : "the gateway reported an error");
  }

  _resync(reason) {
    this.resyncs += 1;
    this.lastResyncReason = reason;
    this._needSnapshot = true;
    this.resuming = true;
    this._drop();
    this._emit();
    // the first re-sync at once, repeated ones with backoff (a server that keeps sending gaps is not hammered)
    const attempt = this._resyncAttempt;
    this._resyncAttempt += 1;
    const delay = attempt === 0 ? 0 : backoffDelay(attempt - 1, this._minMs, this._maxMs, this._random);
    this._schedule(delay, false);
  }
}

/**
 * Follow the live-sessions list (admin): `sessions` (summaries, newest first) is kept current from the
 * `snapshot`, `appeared`, `status` and `ended` events; `onEvent(name, data)` sees each of them (e.g. to refresh
 * an archive list on `ended`). Options: token, type, onChange, onEvent, EventSource, fetch.
 */
export function openLiveSessionsStream(baseUrl, options = {}) {
  return new LiveSessionsStream(baseUrl, options);
}

class LiveSessionsStream extends Reconnecting {
  constructor(baseUrl, options) {
    super(options);
    this.baseUrl = trimBase(baseUrl);
    this.type = options.type || null;
    this._onEvent = typeof options.onEvent === "function" ? options.onEvent : null;
    this._byId = new Map();
    this.sessions = [];
    this.received = false;
    this._connect();
  }

  _beforeRetry() {
    this.resuming = true;
  }

  _connect() {
    const url = `${this.baseUrl}/sessions/live/stream${query({ token: this._token, type: this.type })}`;
    const change = (name) => (event) => this._onListEvent(name, event);
    this._open(url, {
      snapshot: (event) => this._onSnapshot(event),
      appeared: change("appeared"),
      status: change("status"),
      ended: change("ended"),
      error: (event) => {
        if (typeof event.data !== "string") return;
        const data = parseData(event);
        this._fatal(data && data.error ? String(data.error) : "the gateway reported an error");
      },
      "token-expired": () => this._onTokenExpired(),
      ping: () => {},
    });
  }

  _probe() {
    return fetchSessions(this.baseUrl, { live: true, type: this.type, token: this._token, fetch: this._fetch });
  }

  _opened() {
    this._emit();
  }

  _sort() {
    this.sessions = [...this._byId.values()].sort(
      (a, b) => (b.startedAt ?? 0) - (a.startedAt ?? 0) || byId(b.sessionId, a.sessionId),
    );
  }

  _onSnapshot(event) {
    const data = parseData(event);
    this._byId = new Map((data && data.sessions ? data.sessions : []).map((s) => [s.sessionId, s]));
    this._sort();
    this.received = true;
    this.resuming = false;
    this.connected = true;
    if (this._onEvent) this._onEvent("snapshot", data);
    this._emit();
  }

  _onListEvent(name, event) {
    const data = parseData(event);
    if (!data || !data.sessionId) return;
    if (name === "ended") this._byId.delete(data.sessionId);
    else {
      const { type: _type, ...summary } = data;
      this._byId.set(data.sessionId, { ...(this._byId.get(data.sessionId) ?? {}), ...summary, live: true });
    }
    this._sort();
    if (this._onEvent) this._onEvent(name, data);
    this._emit();
  }
}
