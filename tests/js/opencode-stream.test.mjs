// node --test: opencode-stream.js against a scripted EventSource and fetch (no network, no browser).
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import {
  FakeEventSource,
  MODULE_URL,
  SID,
  answer,
  assistant,
  fakeFetch,
  fakeTimers,
  session,
  tool,
  update,
  user,
  userText,
} from "./helpers.mjs";

const {
  applyUpdate,
  appendsFit,
  fetchActiveSession,
  fetchSessions,
  fetchTicketHistory,
  GatewayError,
  openLiveSessionsStream,
  openSessionStream,
  toolCallsOf,
} = await import(MODULE_URL);

function open(options = {}) {
  const timers = fakeTimers();
  const changes = [];
  const { fetch, calls } = fakeFetch(options.routes ?? {});
  const stream = openSessionStream("http://gateway.test/", SID, {
    EventSource: FakeEventSource,
    fetch,
    random: () => 1, // the full backoff ceiling: 250, 500, 1000 ms …
    heartbeatTimeoutMs: 0,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    onChange: (s) => changes.push(s.snapshot()),
    ...options,
  });
  return { stream, timers, changes, calls };
}

beforeEach(() => FakeEventSource.reset());

function appendUpdate(seq, offset, delta) {
  const append = { messageID: "msg_002", partID: "prt_012", field: "text", offset, length: offset + delta.length, delta };
  return { seq, type: "update", sessionId: SID, state: { updatedAt: seq }, appends: [append] };
}

describe("openSessionStream", () => {
  it("builds the transcript from a snapshot and updates, and stops at complete", () => {
    const { stream, timers, changes } = open({ token: "tok" });
    const es = FakeEventSource.last;
    assert.equal(es.url, `http://gateway.test/sessions/${SID}/stream?token=tok`);
    assert.equal(stream.status, null);
    assert.equal(stream.live, null);

    es.open();
    es.emit("snapshot", session({ messages: [{ info: user, parts: [userText] }] }), "1");
    assert.equal(stream.status, "pending");
    assert.equal(stream.live, true);
    assert.deepEqual(stream.toolCalls, []);

    es.emit("update", update(2, { state: { status: "running" }, messages: [assistant], parts: [tool("pending")] }));
    assert.equal(stream.status, "running");
    assert.deepEqual(
      stream.toolCalls.map((c) => [c.tool, c.status]),
      [["bash", "pending"]],
    );
    es.emit("update", update(3, { parts: [tool("running", { metadata: { output: "hel" } })] }));
    assert.equal(stream.toolCalls[0].status, "running");
    assert.equal(stream.toolCalls[0].output, "hel", "the streamed output while the tool runs");
    const done = tool("completed", { title: "echo hello", output: "hello\n" });
    es.emit("update", update(4, { parts: [answer("", false), done] }));
    assert.deepEqual(
      stream.messages[1].parts.map((p) => p.id),
      ["prt_011", "prt_012"],
      "parts ordered by id",
    );
    assert.equal(stream.toolCalls[0].title, "echo hello");
    assert.equal(stream.toolCalls[0].output, "hello\n");
    es.emit("update", update(5, { parts: [answer("The tool ran.")] }));
    es.emit("update", update(6, { state: { status: "completed", updatedAt: 9 } }));
    assert.equal(stream.status, "completed");
    assert.equal(stream.live, true, "still live until complete");

    const final = { ...stream.session, seq: 7, live: false };
    es.emit("complete", final, "7");
    assert.equal(stream.completed, true);
    assert.equal(stream.live, false);
    assert.deepEqual(stream.session, final);
    assert.equal(es.closed, true, "the client closes: EventSource would reconnect by itself");
    assert.equal(timers.pending.length, 0);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(changes.at(-1).completed, true);
    assert.equal(changes.at(-1).messages[1].parts[1].text, "The tool ran.");
  });

  it("ignores updates it already holds and re-syncs on a gap", () => {
    const { stream } = open();
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", session({ seq: 5 }), "5");
    first.emit("update", update(5, { state: { status: "error" } }));
    assert.equal(stream.status, "pending", "seq 5 is held already");

    first.emit("update", update(7, { state: { status: "running" } }));
    assert.equal(first.closed, true);
    assert.equal(stream.resuming, true);
    assert.equal(stream.status, "pending", "the gap is not applied");
  });

  it("re-syncs through a fresh snapshot without lastEventId", async () => {
    const { stream, timers } = open();
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", session({ seq: 5 }), "5");
    first.emit("update", update(7, { state: { status: "running" } }));
    assert.equal(await timers.runNext(), 0);
    const second = FakeEventSource.last;
    assert.notEqual(second, first);
    assert.equal(second.params.get("lastEventId"), null);
    second.open();
    assert.equal(stream.resuming, true, "resuming until the snapshot arrives");
    second.emit("snapshot", session({ seq: 7, status: "running" }), "7");
    assert.equal(stream.resuming, false);
    assert.equal(stream.status, "running");
    second.emit("update", update(8, { state: { status: "completed" } }));
    assert.equal(stream.status, "completed");
    assert.equal(stream.resyncs, 1);
  });

  it("applies appends at their offset and re-syncs by snapshot when one does not fit", async () => {
    const { stream, timers } = open();
    const first = FakeEventSource.last;
    first.open();
    const held = { info: assistant, parts: [answer("Hel\u{1F600}", false)] };
    first.emit("snapshot", session({ seq: 5, status: "running", messages: [held] }), "5");
    first.emit("update", appendUpdate(6, 5, "lo"), "6"); // the emoji counts two: offset 5
    assert.equal(stream.messages[0].parts[0].text, "Hel\u{1F600}lo");
    assert.equal(stream.session.updatedAt, 6);

    first.emit("update", appendUpdate(7, 99, "garbled"), "7");
    assert.equal(first.closed, true);
    assert.equal(stream.resuming, true);
    assert.equal(stream.lastResyncReason, "append offset");
    assert.equal(stream.messages[0].parts[0].text, "Hel\u{1F600}lo", "the misfit is not applied");
    assert.equal(await timers.runNext(), 0);
    const second = FakeEventSource.last;
    assert.equal(second.params.get("lastEventId"), null, "a fresh snapshot, not a resume");
    second.open();
    const whole = { info: assistant, parts: [answer("Hel\u{1F600}lo world", false)] };
    second.emit("snapshot", session({ seq: 7, status: "running", messages: [whole] }), "7");
    second.emit("update", appendUpdate(8, 13, "!"), "8");
    assert.equal(stream.messages[0].parts[0].text, "Hel\u{1F600}lo world!");
    assert.equal(stream.resyncs, 1);
  });

  it("reconnects after a drop with backoff and lastEventId, and resumes without a snapshot", async () => {
    const { stream, timers, changes } = open({ token: "tok" });
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", session({ seq: 3, status: "running" }), "3");
    first.fail();
    assert.equal(first.closed, true);
    assert.equal(stream.resuming, true);
    assert.equal(stream.connected, false);
    assert.equal(changes.at(-1).resuming, true);
    assert.equal(await timers.runNext(), 250);
    const second = FakeEventSource.last;
    assert.equal(second.params.get("lastEventId"), "3");
    assert.equal(second.params.get("token"), "tok");

    second.fail(); // refused before it opened: probed (gateway down: fetch fails), then tried again, later
    assert.equal(await timers.runNext(), 500);
    const third = FakeEventSource.last;
    assert.notEqual(third, second);
    third.fail();
    assert.equal(await timers.runNext(), 1000);
    const fourth = FakeEventSource.last;
    fourth.open();
    assert.equal(stream.resuming, false, "back at the same seq: nothing to replay");
    fourth.emit("update", update(4, { state: { status: "completed" } }));
    assert.equal(stream.status, "completed");
    fourth.fail();
    assert.equal(await timers.runNext(), 250, "a successful open resets the backoff");
    assert.equal(FakeEventSource.last.params.get("lastEventId"), "4");
    assert.equal(stream.reconnects, 4);
  });

  it("caps the backoff", async () => {
    const { timers } = open({ maxBackoffMs: 2000 });
    const delays = [];
    for (let i = 0; i < 6; i++) {
      FakeEventSource.last.fail();
      delays.push(await timers.runNext());
    }
    assert.deepEqual(delays, [250, 500, 1000, 2000, 2000, 2000]);
  });

  it("drops and resumes a connection gone silent (no event, not even a ping)", async () => {
    let now = 0;
    const { stream, timers } = open({ heartbeatTimeoutMs: 1000, now: () => now });
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", session({ seq: 2 }), "2");
    now = 600;
    es.emit("ping", { time: 600 });
    assert.equal(timers.pending.length, 1, "one watchdog timer, however many events");
    now = 1000;
    assert.equal(await timers.runNext(), 1000);
    assert.equal(es.closed, false, "heard from 400 ms ago: still alive");
    assert.equal(timers.pending[0].ms, 600);
    now = 1600;
    await timers.runNext();
    assert.equal(es.closed, true);
    assert.equal(stream.resuming, true);
    assert.equal(await timers.runNext(), 250);
    assert.equal(FakeEventSource.last.params.get("lastEventId"), "2");
    stream.close();
    assert.equal(timers.pending.length, 0);
  });

  it("stops with the gateway's message when the session cannot be read (401, 403, 404)", async () => {
    const routes = { [`/sessions/${SID}`]: [401, { error: "a token is required", detail: null }] };
    const { stream, timers, calls } = open({ routes, token: "expired" });
    FakeEventSource.last.fail();
    await timers.runNext();
    assert.equal(calls.length, 1);
    assert.equal(calls[0].headers.Authorization, "Bearer expired");
    assert.equal(stream.error, "a token is required");
    assert.equal(stream.errorStatus, 401);
    assert.equal(stream.resuming, false);
    assert.equal(timers.pending.length, 0, "no more reconnects");
    assert.equal(FakeEventSource.instances.length, 1);
  });

  it("keeps trying while the gateway answers 503", async () => {
    const routes = { [`/sessions/${SID}`]: [503, { error: "Redis unreachable" }] };
    const { stream, timers } = open({ routes });
    FakeEventSource.last.fail();
    await timers.runNext();
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(stream.error, null);
  });

  it("stops on the server's error event", () => {
    const { stream, timers } = open();
    const es = FakeEventSource.last;
    es.open();
    es.emit("error", { error: "session vanished" });
    assert.equal(stream.error, "session vanished");
    assert.equal(es.closed, true);
    assert.equal(timers.pending.length, 0);
  });

  it("shows the session's own error", () => {
    const { stream } = open();
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", session({ status: "error", error: "APIError: Scripted rejection" }), "1");
    assert.equal(stream.error, "APIError: Scripted rejection");
  });

  it("closes cleanly: no EventSource, no timer, no more onChange", () => {
    const { stream, timers, changes } = open();
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", session(), "1");
    es.fail();
    assert.equal(timers.pending.length, 1);
    const seen = changes.length;
    stream.close();
    assert.equal(stream.closed, true);
    assert.equal(timers.pending.length, 0);
    es.emit("update", update(2, { state: { status: "running" } }));
    assert.equal(changes.length, seen);
    stream.close(); // twice is fine
  });
});

describe("applyUpdate", () => {
  it("upserts and removes by id, keeps order and does not touch its input", () => {
    const other = { id: "prt_002", messageID: "msg_001", type: "text", text: "more" };
    const state = session({ messages: [{ info: user, parts: [userText, other] }] });
    const frozen = JSON.stringify(state);
    const next = applyUpdate(
      state,
      update(2, {
        state: { status: "running" },
        messages: [assistant],
        parts: [answer("b"), tool("pending"), { ...userText, text: "edited" }],
        removedParts: [{ messageID: "msg_001", id: "prt_002" }],
      }),
    );
    assert.equal(JSON.stringify(state), frozen);
    assert.equal(next.seq, 2);
    assert.equal(next.status, "running");
    assert.deepEqual(
      next.messages.map((m) => [m.info.id, m.parts.map((p) => p.id)]),
      [
        ["msg_001", ["prt_001"]],
        ["msg_002", ["prt_011", "prt_012"]],
      ],
    );
    assert.equal(next.messages[0].parts[0].text, "edited");
    const later = applyUpdate(next, update(3, { removedMessages: ["msg_001"] }));
    assert.deepEqual(
      later.messages.map((m) => m.info.id),
      ["msg_002"],
    );
    assert.equal(later.messages[0], next.messages[1], "an untouched message keeps its identity");
  });

  it("appends text without touching its input, and checks offsets with appendsFit", () => {
    const before = session({ seq: 1, messages: [{ info: assistant, parts: [answer("Hi", false)] }] });
    const after = applyUpdate(before, appendUpdate(2, 2, " there"));
    assert.equal(after.messages[0].parts[0].text, "Hi there");
    assert.equal(before.messages[0].parts[0].text, "Hi");
    assert.equal(appendsFit(before, appendUpdate(2, 2, "x")), true);
    assert.equal(appendsFit(before, appendUpdate(2, 3, "x")), false);
    assert.equal(appendsFit(session({ seq: 1 }), appendUpdate(2, 0, "x")), false, "a part it does not hold");
    assert.throws(() => applyUpdate(before, appendUpdate(2, 3, "x")), RangeError);
    const ending = appendUpdate(3, 8, "");
    const { text: _text, ...ended } = answer("", true);
    ending.appends[0].part = ended;
    const last = applyUpdate(after, ending);
    assert.deepEqual(last.messages[0].parts[0], answer("Hi there", true), "`part` replaces the other fields");
  });

  it("puts a part of a message it has not seen under a placeholder info", () => {
    const next = applyUpdate(session(), update(2, { parts: [answer("x")] }));
    assert.deepEqual(next.messages[0].info, { id: "msg_002" });
  });

  it("toolCallsOf lists every tool part with its status", () => {
    const calls = toolCallsOf([{ info: assistant, parts: [tool("error", { error: "File not found" })] }]);
    assert.equal(calls[0].status, "error");
    assert.equal(calls[0].error, "File not found");
  });
});

describe("JSON helpers", () => {
  it("fetchActiveSession: the session, or null without one", async () => {
    const { fetch, calls } = fakeFetch({
      "/tickets/T-1/active": [200, session()],
      "/tickets/T-2/active": [404, { error: "ticket T-2 has no live session" }],
    });
    assert.equal((await fetchActiveSession("http://gateway.test", "T-1", { fetch, token: "t" })).sessionId, SID);
    assert.equal(await fetchActiveSession("http://gateway.test", "T-2", { fetch }), null);
    assert.equal(calls[0].headers.Authorization, "Bearer t");
    assert.equal(calls[1].headers.Authorization, undefined);
  });

  it("fetchTicketHistory and fetchSessions pass the page and filters", async () => {
    const { fetch, calls } = fakeFetch({
      "/tickets/T-1/sessions?limit=2&before=abc": [200, { sessions: [], nextCursor: null }],
      "/sessions?type=chat&ticket=T-1&limit=5": [200, { sessions: [], nextCursor: null }],
      "/sessions?live=true&type=ask": [200, { sessions: [], nextCursor: null }],
      "/sessions?type=nope": [400, { error: "type must be one of ask, chat, admin" }],
    });
    await fetchTicketHistory("http://gateway.test", "T-1", { fetch, limit: 2, before: "abc" });
    await fetchSessions("http://gateway.test", { fetch, type: "chat", ticket: "T-1", limit: 5 });
    await fetchSessions("http://gateway.test", { fetch, live: true, type: "ask" });
    await assert.rejects(fetchSessions("http://gateway.test", { fetch, type: "nope" }), (err) => {
      assert.ok(err instanceof GatewayError);
      assert.equal(err.status, 400);
      assert.match(err.message, /type must be/);
      return true;
    });
    assert.equal(calls.length, 4);
  });
});

describe("openLiveSessionsStream", () => {
  it("keeps the live list from snapshot, appeared, status and ended", async () => {
    const timers = fakeTimers();
    const events = [];
    const list = openLiveSessionsStream("http://gateway.test", {
      EventSource: FakeEventSource,
      token: "admin",
      type: "ask",
      random: () => 1,
      heartbeatTimeoutMs: 0,
      setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout,
      onEvent: (name, data) => events.push([name, data.sessionId]),
    });
    const es = FakeEventSource.last;
    assert.equal(es.url, "http://gateway.test/sessions/live/stream?token=admin&type=ask");
    es.open();
    const a = { sessionId: "ses_a", sessionType: "ask", status: "running", startedAt: 1 };
    es.emit("snapshot", { sessions: [a] }, "1");
    es.emit("appeared", { type: "appeared", sessionId: "ses_b", sessionType: "ask", status: "pending", startedAt: 2 });
    assert.deepEqual(
      list.sessions.map((s) => s.sessionId),
      ["ses_b", "ses_a"],
      "newest first",
    );
    es.emit("status", { type: "status", sessionId: "ses_b", status: "running", startedAt: 2 });
    assert.equal(list.sessions[0].status, "running");
    es.emit("ended", { type: "ended", sessionId: "ses_a", status: "completed" });
    assert.deepEqual(
      list.sessions.map((s) => s.sessionId),
      ["ses_b"],
    );
    assert.deepEqual(events.slice(1), [
      ["appeared", "ses_b"],
      ["status", "ses_b"],
      ["ended", "ses_a"],
    ]);
    es.fail();
    assert.equal(list.resuming, true);
    await timers.runNext();
    FakeEventSource.last.open();
    FakeEventSource.last.emit("snapshot", { sessions: [] }, "1");
    assert.equal(list.resuming, false);
    assert.deepEqual(list.sessions, []);
    list.close();
    assert.equal(FakeEventSource.last.closed, true);
  });
});
