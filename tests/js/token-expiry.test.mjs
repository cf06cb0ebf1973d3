// node --test: the streams when the gateway ends them at their token's expiry (`token-expired`).
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { FakeEventSource, MODULE_URL, SID, fakeFetch, fakeTimers, session } from "./helpers.mjs";

const { openLiveSessionsStream, openSessionStream } = await import(MODULE_URL);
const settle = () => new Promise((r) => setImmediate(r));
const EXPIRED = { error: "token expired", exp: 1700000000 };

function open(options = {}) {
  const timers = fakeTimers();
  const changes = [];
  const { fetch, calls } = fakeFetch(options.routes ?? {});
  const stream = openSessionStream("http://gateway.test/", SID, {
    EventSource: FakeEventSource,
    fetch,
    random: () => 1,
    heartbeatTimeoutMs: 0,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    onChange: (s) => changes.push(s.snapshot()),
    ...options,
  });
  return { stream, timers, changes, calls };
}

beforeEach(() => FakeEventSource.reset());

describe("token-expired", () => {
  it("resumes at once with the token refreshToken gives, from the seq it holds", async () => {
    const asked = [];
    const { stream, timers } = open({
      token: "old",
      refreshToken: async () => {
        asked.push(stream.resuming);
        return "new";
      },
    });
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", session({ seq: 3, status: "running" }), "3");
    first.emit("token-expired", EXPIRED);
    assert.equal(first.closed, true);
    await settle();
    assert.deepEqual(asked, [true], "resuming while the app refreshes");
    const second = FakeEventSource.last;
    assert.notEqual(second, first);
    assert.equal(second.params.get("token"), "new");
    assert.equal(second.params.get("lastEventId"), "3");
    assert.equal(stream.tokenRefreshes, 1);
    assert.equal(timers.pending.length, 0, "no backoff for a renewal");
    second.open();
    assert.equal(stream.resuming, false);
    assert.equal(stream.error, null);
    assert.equal(stream.status, "running");
  });

  it("stops with errorStatus 401 without refreshToken", async () => {
    const { stream, timers } = open({ token: "old" });
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", session({ seq: 3 }), "3");
    first.emit("token-expired", EXPIRED);
    await settle();
    assert.equal(stream.error, "token expired");
    assert.equal(stream.errorStatus, 401);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(timers.pending.length, 0);
  });

  it("stops with errorStatus 401 when refreshToken has no token (null, or a throw)", async () => {
    for (const refreshToken of [() => null, async () => Promise.reject(new Error("logged out"))]) {
      FakeEventSource.reset();
      const { stream } = open({ token: "old", refreshToken });
      FakeEventSource.last.open();
      FakeEventSource.last.emit("token-expired", EXPIRED);
      await settle();
      assert.equal(stream.errorStatus, 401);
      assert.equal(FakeEventSource.instances.length, 1);
    }
  });

  it("renews a token refused (401) on a reconnect, then reconnects with it", async () => {
    const routes = { [`/sessions/${SID}`]: [401, { error: "token expired", detail: null }] };
    const { stream, timers } = open({ routes, token: "old", refreshToken: () => "new" });
    FakeEventSource.last.fail(); // refused before it opened: the probe finds the 401
    await timers.runNext();
    assert.equal(stream.errorStatus, null);
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(FakeEventSource.last.params.get("token"), "new");
  });

  it("the live list resumes with a fresh token too", async () => {
    const timers = fakeTimers();
    const list = openLiveSessionsStream("http://gateway.test", {
      EventSource: FakeEventSource,
      token: "old",
      refreshToken: () => "new",
      heartbeatTimeoutMs: 0,
      setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout,
    });
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", { sessions: [] }, "1");
    first.emit("token-expired", EXPIRED);
    await settle();
    assert.equal(FakeEventSource.last.params.get("token"), "new");
    assert.equal(list.tokenRefreshes, 1);
    assert.equal(list.resuming, true);
    FakeEventSource.last.open();
    FakeEventSource.last.emit("snapshot", { sessions: [] }, "1");
    assert.equal(list.resuming, false);
    list.close();
  });
});
