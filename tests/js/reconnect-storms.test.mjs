// node --test: opencode-stream.js against a gateway (or a proxy in front of it) that takes connections and drops
// them at once: the reconnects still back off, and a stream that delivers resets the backoff.
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { FakeEventSource, MODULE_URL, SID, fakeFetch, fakeTimers, session } from "./helpers.mjs";

const { openLiveSessionsStream, openSessionStream } = await import(MODULE_URL);

beforeEach(() => FakeEventSource.reset());

function options(timers) {
  return {
    EventSource: FakeEventSource,
    fetch: fakeFetch({}).fetch,
    random: () => 1, // the full backoff ceiling: 250, 500, 1000 ms …
    heartbeatTimeoutMs: 0,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
  };
}

/** Each connection opens and drops before any event; the delays the client waits before each reconnect. */
async function openAndDrop(times, timers) {
  const delays = [];
  for (let i = 0; i < times; i++) {
    FakeEventSource.last.open();
    FakeEventSource.last.fail();
    delays.push(await timers.runNext());
  }
  return delays;
}

describe("connections that open and drop before any event", () => {
  // Was: every open reset the backoff, so such a gateway got a reconnect every 125-250 ms, forever.
  it("back off on a session stream", async () => {
    const timers = fakeTimers();
    openSessionStream("http://gateway.test", SID, options(timers));
    assert.deepEqual(await openAndDrop(6, timers), [250, 500, 1000, 2000, 4000, 8000]);
  });

  it("back off on the live list stream", async () => {
    const timers = fakeTimers();
    openLiveSessionsStream("http://gateway.test", options(timers));
    assert.deepEqual(await openAndDrop(4, timers), [250, 500, 1000, 2000]);
  });

  it("reset the backoff once a connection delivers an event", async () => {
    const timers = fakeTimers();
    openSessionStream("http://gateway.test", SID, options(timers));
    assert.deepEqual(await openAndDrop(3, timers), [250, 500, 1000]);
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", session({ seq: 2 }), "2");
    es.fail();
    assert.equal(await timers.runNext(), 250);
  });
});
