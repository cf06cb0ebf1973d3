// Shared by the node tests: where the npm dev dependencies are, and fakes of EventSource, fetch and timers.
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const STATIC = resolve(HERE, "../../gateway/static");
export const MODULE_URL = pathToFileURL(join(STATIC, "opencode-stream.js")).href;
/** tests/js/run installs package.json's devDependencies here (outside the work tree). */
export const DEPS = process.env.OPENCODE_JS_DEPS ?? join(process.env.HOME ?? ".", ".cache/opencode-session-layer/js");
export const requireDep = createRequire(join(DEPS, "package.json"));
export const importDep = (path) => import(pathToFileURL(join(DEPS, "node_modules", path)).href);

/** An EventSource the test drives: open(), emit(name, data, id), fail(), and what the client did (url, closed). */
export class FakeEventSource {
  static instances = [];

  static reset() {
    FakeEventSource.instances = [];
  }

  static get last() {
    return FakeEventSource.instances.at(-1);
  }

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.closed = false;
    this.listeners = new Map();
    this.onopen = null;
    this.onerror = null;
    FakeEventSource.instances.push(this);
  }

  get params() {
    return new URL(this.url, "http://gateway.test").searchParams;
  }

  addEventListener(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(listener);
  }

  close() {
    this.closed = true;
    this.readyState = 2;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({ type: "open" });
  }

  emit(name, data, id) {
    const event = { type: name, data: typeof data === "string" ? data : JSON.stringify(data), lastEventId: id ?? "" };
    for (const listener of this.listeners.get(name) ?? []) listener(event);
    if (name === "error") this.onerror?.(event);
  }

  /** A dropped or refused connection, as a browser reports it: an `error` Event without data. */
  fail() {
    this.readyState = 0;
    const event = { type: "error" };
    for (const listener of this.listeners.get("error") ?? []) listener(event);
    this.onerror?.(event);
  }
}

/** setTimeout/clearTimeout the test runs by hand: `timers.pending`, `await timers.runNext()`. */
export function fakeTimers() {
  let nextId = 1;
  const pending = new Map();
  return {
    setTimeout(fn, ms) {
      const id = nextId++;
      pending.set(id, { fn, ms });
      return id;
    },
    clearTimeout(id) {
      pending.delete(id);
    },
    get pending() {
      return [...pending.values()];
    },
    async runNext() {
      const [id, timer] = pending.entries().next().value;
      pending.delete(id);
      await timer.fn();
      await new Promise((r) => setImmediate(r));
      return timer.ms;
    },
  };
}

/** A fetch answering from `routes` (path+query -> [status, body]); records each call. */
export function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const u = new URL(url, "http://gateway.test");
    calls.push({ url: u.pathname + u.search, headers: init.headers ?? {} });
    const route = routes[u.pathname + u.search] ?? routes[u.pathname];
    if (route === undefined) throw new TypeError("fetch failed");
    const [status, body] = route;
    return { ok: status >= 200 && status < 300, status, json: async () => body };
  };
  return { fetch, calls };
}

// --- a session as the gateway sends it ---------------------------------------------------------------------

export const SID = "ses_0123456789abcdefABCDEF01";

export function session(overrides = {}) {
  return {
    sessionId: SID,
    ticketId: "T-1",
    sessionType: "ask",
    status: "pending",
    title: null,
    messages: [],
    currentToolCalls: [],
    error: null,
    startedAt: 1000,
    updatedAt: 1000,
    metadata: null,
    seq: 1,
    live: true,
    ...overrides,
  };
}

export function update(seq, change = {}) {
  return {
    seq,
    type: "update",
    sessionId: SID,
    state: {},
    messages: [],
    parts: [],
    removedMessages: [],
    removedParts: [],
    ...change,
  };
}

export const user = { id: "msg_001", role: "user", time: { created: 1 } };
export const assistant = { id: "msg_002", role: "assistant", time: { created: 2 } };
export const userText = { id: "prt_001", messageID: "msg_001", type: "text", text: "TOOL please" };
export const tool = (status, extra = {}) => ({
  id: "prt_011",
  messageID: "msg_002",
  type: "tool",
  tool: "bash",
  callID: "call_1",
  state: { status, input: { command: "echo hello" }, ...extra },
});
export const answer = (text, ended = true) => ({
  id: "prt_012",
  messageID: "msg_002",
  type: "text",
  text,
  time: ended ? { start: 3, end: 4 } : { start: 3 },
});
