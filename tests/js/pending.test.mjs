// node --test: a waiting session's `pending` requests through opencode-stream.js (snapshot, update, complete).
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { FakeEventSource, MODULE_URL, SID, fakeFetch, fakeTimers, session, update } from "./helpers.mjs";

const { openSessionStream } = await import(MODULE_URL);

const REQUEST = {
  kind: "permission",
  id: "per_0123456789abcdefABCDEF",
  askedAt: 5,
  tool: { messageID: "msg_002", callID: "call_1" },
  permission: "bash",
  patterns: ["echo hello"],
  metadata: { command: "echo hello" },
  always: ["echo *"],
};

beforeEach(() => FakeEventSource.reset());

describe("pending requests", () => {
  it("are exposed from the snapshot and each update, and cleared when answered", () => {
    const timers = fakeTimers();
    const changes = [];
    const stream = openSessionStream("http://gateway.test", SID, {
      EventSource: FakeEventSource,
      fetch: fakeFetch({}).fetch,
      heartbeatTimeoutMs: 0,
      setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout,
      onChange: (s) => changes.push(s.snapshot()),
    });
    const es = FakeEventSource.last;
    assert.deepEqual(stream.pending, []);
    es.open();
    es.emit("snapshot", session({ status: "running" }), "1");
    assert.deepEqual(stream.pending, [], "a session without the field has none");
    es.emit("update", update(2, { state: { status: "waiting", pending: [REQUEST] } }));
    assert.equal(stream.status, "waiting");
    assert.deepEqual(stream.pending, [REQUEST]);
    assert.deepEqual(changes.at(-1).pending, [REQUEST], "snapshot() carries them for a React state");
    es.emit("update", update(3, { state: { status: "running", pending: [] } }));
    assert.deepEqual(stream.pending, []);
    stream.close();
  });
});
