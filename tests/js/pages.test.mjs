// node --test: the /ui pages' modules in a happy-dom window, against hostile values and load: pending-view.js,
// session-view.js, usage-view.js and sessions-page.js.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { FakeEventSource, STATIC, importDep } from "./helpers.mjs";

let window;
const load = (name) => import(pathToFileURL(join(STATIC, name)).href);

before(async () => {
  const { Window } = await importDep("happy-dom/lib/index.js");
  window = new Window({ url: "http://gateway.test/ui/" });
  globalThis.window = window;
  globalThis.document = window.document;
  for (const name of ["navigator", "HTMLElement", "Node", "Event", "sessionStorage", "location", "history"]) {
    if (!(name in globalThis)) globalThis[name] = window[name];
  }
});

after(async () => {
  await window.happyDOM.close();
});

const SID = "ses_0123456789abcdefABCDEF01";
const permission = (overrides = {}) => ({
  kind: "permission",
  id: "per_0123456789abcdefABCDEF",
  askedAt: 5,
  permission: "bash",
  patterns: ["echo hello"],
  metadata: { command: "echo hello" },
  ...overrides,
});

describe("pending requests", () => {
  it("never put an id the CLI would refuse into the command to paste (was: `$(…)` in an id ran in the shell)", async () => {
    const { pendingRequest } = await load("pending-view.js");
    for (const id of ["per_1; touch /tmp/pwned", "que_$(touch /tmp/pwned)", "per_1`id`", "per_1\n--always", ""]) {
      for (const kind of ["permission", "question"]) {
        const el = pendingRequest(SID, permission({ id, kind, questions: [{ question: "Go?", options: [] }] }));
        const command = el.querySelector(".pending-how");
        assert.match(command.textContent, /No opencode-sessions command answers it/);
        assert.ok(!command.textContent.includes("pwned") && !command.textContent.includes("`"), command.textContent);
        assert.ok(!command.textContent.includes("\n"), command.textContent);
      }
    }
    const fine = pendingRequest(SID, permission()).querySelector("[data-testid=pending-answer]");
    assert.equal(
      fine.textContent,
      `opencode-sessions reply ${SID} per_0123456789abcdefABCDEF --once|--always|--reject [--message TEXT] [--by WHO]`,
    );
  });
});

// Bidi overrides and isolates reorder what a person reads ("Trojan source"), and controls hide text: in what a run
// asks to be run, and what ran, each shows as its escape, as the CLI shows it (shared/cli/terminal.visible).
const SPOOFS = ["\u202e", "\u202a", "\u2066", "\u2069", "\x1b", "\x00", "\x7f", "\x9b"];
const spoofed = (text) => SPOOFS.filter((c) => text.includes(c));

describe("controls and bidi overrides", () => {
  it("show as escapes in a pending request (was: raw, the command read as another one)", async () => {
    const { pendingRequest, pendingSummary } = await load("pending-view.js");
    const command = "echo safe \u202e; rm -rf ~ #\u202c\x1b[2K\u2066x\u2069\x00\x7f\x9b";
    const request = permission({ metadata: { command }, permission: "bash\u202e" });
    const question = permission({
      kind: "question",
      questions: [{ question: "Pick\u202e one", options: [{ label: "ye\u2067s", description: "d\u202ex" }] }],
    });
    for (const el of [pendingRequest(SID, request), pendingSummary({ pending: [request] }), pendingRequest(SID, question)]) {
      assert.deepEqual(spoofed(el.textContent), [], JSON.stringify(el.textContent));
    }
    const shown = pendingRequest(SID, request).querySelector("[data-testid=pending-command]").textContent;
    assert.equal(shown, "bash\\u202e: echo safe \\u202e; rm -rf ~ #\\u202c\\x1b[2K\\u2066x\\u2069\\x00\\x7f\\x9b");
    assert.ok(pendingRequest(SID, question).textContent.includes("ye\\u2067s"));
  });

  it("show as escapes in a tool call's name, title and input, with tabs, newlines and emoji kept", async () => {
    const { SessionView } = await load("session-view.js");
    const root = document.createElement("div");
    document.body.append(root);
    const view = new SessionView(root);
    view._build();
    const input = { command: "ls \u202egnp.exe\tx\ny \u{1F600}\ud800", path: "/a\u2066b" };
    const part = { id: "prt_1", messageID: "msg_1", type: "tool", tool: "ba\u202esh", state: { status: "running", input } };
    const message = { info: { id: "msg_1", role: "assistant", time: { created: 1 } }, parts: [part] };
    view._renderMessages({ messages: [message], live: true });
    const call = root.querySelector("[data-testid=tool-call]");
    assert.deepEqual(spoofed(call.textContent), [], JSON.stringify(call.textContent));
    assert.equal(call.querySelector(".tool-name").textContent, "ba\\u202esh");
    assert.equal(call.querySelector("[data-testid=tool-title]").textContent, "ls \\u202egnp.exe\tx\ny \u{1F600}\\ud800");
    root.remove();
  });
});

/** setInterval the test ticks by hand, and a fetch answering `status` to every call. */
function fakeIntervalsAndFetch(status) {
  const saved = { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval, fetch: globalThis.fetch };
  const timers = new Map();
  let calls = 0;
  let nextId = 1;
  globalThis.setInterval = (fn) => {
    timers.set(nextId, fn);
    return nextId++;
  };
  globalThis.clearInterval = (id) => timers.delete(id);
  globalThis.fetch = async () => {
    calls += 1;
    const body = status === 200 ? { total: { steps: 1 } } : { error: "a token is required" };
    return { ok: status === 200, status, json: async () => body };
  };
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  return {
    get calls() {
      return calls;
    },
    async tick() {
      for (const fn of [...timers.values()]) fn();
      await settle();
    },
    settle,
    restore: () => Object.assign(globalThis, saved),
  };
}

describe("the ticket's usage line", () => {
  it("stops asking once the gateway refuses the token (was: a 401 every 5 s, forever)", async () => {
    const { ticketUsageLine } = await load("usage-view.js");
    for (const status of [401, 403, 404]) {
      const fake = fakeIntervalsAndFetch(status);
      try {
        ticketUsageLine("T-1", "expired");
        await fake.settle();
        await fake.tick();
        await fake.tick();
        assert.equal(fake.calls, 1, `after a ${status}`);
      } finally {
        fake.restore();
      }
    }
  });

  it("keeps asking through what may pass (the gateway down, a 503)", async () => {
    const { ticketUsageLine } = await load("usage-view.js");
    const fake = fakeIntervalsAndFetch(503);
    try {
      const el = ticketUsageLine("T-1", "tok");
      await fake.settle();
      await fake.tick();
      assert.equal(fake.calls, 2);
      assert.equal(el.querySelector("[data-testid=ticket-usage-text]").textContent, "…");
    } finally {
      fake.restore();
    }
  });
});

describe("a long session's transcript", () => {
  const text = (id, body) => ({ id: `prt_${id}`, messageID: `msg_${id}`, type: "text", text: body });
  const message = (id, body) => ({ info: { id: `msg_${id}`, role: "user", time: { created: 1 } }, parts: [text(id, body)] });

  it("re-renders only what an update changed, without re-reading the rest (was: every event serialised it all)", async () => {
    const { SessionView } = await load("session-view.js");
    const root = document.createElement("div");
    const view = new SessionView(root);
    view._build();
    let reads = 0;
    const untouched = message("1", "the first prompt");
    const parts = untouched.parts;
    Object.defineProperty(untouched, "parts", { enumerable: true, get: () => (reads++, parts) });
    view._renderMessages({ messages: [untouched, message("2", "a")], live: true });
    const first = root.querySelector("[data-message-id=msg_1]");
    reads = 0;
    view._renderMessages({ messages: [untouched, message("2", "ab")], live: true });
    assert.equal(reads, 0, "the message the update left alone was read again");
    assert.equal(root.querySelector("[data-message-id=msg_1]"), first);
    assert.equal(root.querySelector("[data-message-id=msg_2]").textContent.includes("ab"), true);
  });

  it("renders a burst of events once, with the last of them (was: a whole render, markdown and all, per event)", async () => {
    const { SessionView } = await load("session-view.js");
    const view = new SessionView(document.createElement("div"));
    const rendered = [];
    let done;
    const once = new Promise((resolve) => (done = resolve));
    view._render = (stream) => {
      rendered.push(stream);
      done();
    };
    const streams = Array.from({ length: 50 }, (_, n) => ({ n }));
    for (const stream of streams) view._renderSoon(stream);
    await once;
    await new Promise((resolve) => setTimeout(resolve, 0)); // a second render would be due by now, were it one per event
    assert.deepEqual(rendered, [streams[49]]);
  });

  it("keeps the elements of messages a re-sync's snapshot repeats, and rebuilds those it changed", async () => {
    const { SessionView } = await load("session-view.js");
    const root = document.createElement("div");
    const view = new SessionView(root);
    view._build();
    view._renderMessages({ messages: [message("1", "same"), message("2", "old")], live: true });
    const [one, two] = root.querySelectorAll("li.message");
    view._renderMessages({ messages: [message("1", "same"), message("2", "new")], live: true });
    const [oneAgain, twoAgain] = root.querySelectorAll("li.message");
    assert.equal(oneAgain, one);
    assert.notEqual(twoAgain, two);
    assert.match(twoAgain.textContent, /new/);
    view._renderMessages({ messages: [message("1", "same"), message("2", "new")], live: false });
    assert.notEqual(root.querySelector("li.message"), one, "archived: rendered again as ended");
  });
});

describe("the sessions list", () => {
  it("refreshes history once for a burst of ended sessions (was: a request each, and five retries each)", async () => {
    const saved = { setTimeout: globalThis.setTimeout, fetch: globalThis.fetch, EventSource: globalThis.EventSource };
    const timers = [];
    const requests = [];
    let archived = [];
    globalThis.setTimeout = (fn, ms) => (ms < 10_000 ? timers.push({ fn, ms }) : 0); // not the stream's watchdog
    globalThis.EventSource = FakeEventSource;
    globalThis.fetch = async (url) => {
      requests.push(url);
      return { ok: true, status: 200, json: async () => ({ sessions: archived, nextCursor: null }) };
    };
    const settle = () => new Promise((resolve) => saved.setTimeout(resolve, 0));
    const summary = (n) => ({ sessionId: `ses_${String(n).padStart(20, "0")}`, sessionType: "ask", status: "completed",
      startedAt: n, live: false });
    try {
      document.body.innerHTML = '<nav id="auth"></nav><main id="app"></main>';
      await load("sessions-page.js");
      const es = FakeEventSource.last;
      es.open();
      es.emit("snapshot", { sessions: [] });
      await settle();
      requests.length = 0;
      for (let n = 1; n <= 30; n++) es.emit("ended", { ...summary(n), type: "ended" });
      await settle();
      while (timers.length) {
        timers.shift().fn();
        await settle();
      }
      assert.ok(requests.length <= 6, `${requests.length} requests for one burst`);
      archived = [1, 2, 3].map(summary);
      es.emit("ended", { ...summary(3), type: "ended" });
      while (timers.length) {
        timers.shift().fn();
        await settle();
      }
      const shown = [...document.querySelectorAll("[data-testid=history-list] li")].map((li) => li.dataset.sessionId);
      assert.deepEqual(shown, [3, 2, 1].map((n) => summary(n).sessionId));
      window.dispatchEvent(new window.Event("pagehide"));
      assert.equal(es.closed, true);
    } finally {
      Object.assign(globalThis, saved);
    }
  });
});
