// node --test: opencode-stream.js (and so the React hook and the /ui pages, which apply events through it) against
// hostile and out-of-step appends. An append that does not extend the held text exactly as the gateway's does is
// a gap: the client re-syncs by snapshot and never shows a text OpenCode did not write.
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { FakeEventSource, MODULE_URL, SID, answer, assistant, fakeTimers, session, update } from "./helpers.mjs";

const { applyUpdate, appendsFit, openSessionStream } = await import(MODULE_URL);

beforeEach(() => FakeEventSource.reset());

function open() {
  const timers = fakeTimers();
  const stream = openSessionStream("http://gateway.test", SID, {
    EventSource: FakeEventSource,
    random: () => 1,
    heartbeatTimeoutMs: 0,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
  });
  return { stream, timers };
}

function append(seq, fields = {}) {
  const delta = fields.delta ?? "x";
  const offset = fields.offset ?? 2;
  const one = { messageID: "msg_002", partID: "prt_012", field: "text", offset, length: offset + delta.length, delta };
  return { seq, type: "update", sessionId: SID, state: { updatedAt: seq }, appends: [{ ...one, ...fields }] };
}

const held = () => session({ seq: 1, status: "running", messages: [{ info: assistant, parts: [answer("Hi", false)] }] });

/** A stream holding `held()` at seq 1 that receives `change` as seq 2. */
function streamed(change) {
  const { stream, timers } = open();
  const es = FakeEventSource.last;
  es.open();
  es.emit("snapshot", held(), "1");
  let thrown = null;
  try {
    es.emit("update", change, "2");
  } catch (err) {
    thrown = err;
  }
  return { stream, timers, es, thrown };
}

const { text: _text, ...endedPart } = answer("", true);

// Each of these was applied (appendsFit said true): the part was renamed, moved, retyped, given a text of another
// length than the gateway's, or replaced by a non-part.
const MISFITS = [
  ["a field that names the part (id)", { field: "id", offset: 7, length: 8 }],
  ["a field that is its kind (type)", { field: "type", offset: 4, length: 5 }],
  ["__proto__", { field: "__proto__", offset: 0, length: 1 }],
  ["a length that is not offset + the delta's", { length: 99 }],
  ["a length short by an emoji's second unit", { delta: "\u{1F600}", length: 3 }],
  ["a `part` with another id", { part: { ...endedPart, id: "prt_999" } }],
  ["a `part` of another message", { part: { ...endedPart, messageID: "msg_777" } }],
  ["a `part` that is no object", { part: "zz" }],
  ["a `part` that is an array", { part: [] }],
  ["a delta that is no string", { delta: 5, length: 3 }],
];

describe("hostile appends", () => {
  for (const [name, fields] of MISFITS) {
    it(`re-syncs by snapshot on ${name}, the text untouched`, async () => {
      const change = append(2, fields);
      assert.equal(appendsFit(held(), change), false);
      assert.throws(() => applyUpdate(held(), change));
      const { stream, timers, es } = streamed(change);
      assert.equal(es.closed, true);
      assert.equal(stream.lastResyncReason, "append offset");
      assert.deepEqual(stream.messages[0].parts[0], answer("Hi", false));
      assert.equal(await timers.runNext(), 0);
      assert.equal(FakeEventSource.last.params.get("lastEventId"), null, "a fresh snapshot, not a resume");
    });
  }

  it("applies what the protocol allows: an emoji's two units, NUL, U+2028, markup as text, a new type", () => {
    let state = held();
    for (const [seq, delta] of [[2, "\u{1F600}"], [3, "\u0000\u2028<script>x</script>"], [4, "\ud83d"], [5, "\ude00"]]) {
      const change = append(seq, { delta, offset: state.messages[0].parts[0].text.length });
      assert.equal(appendsFit(state, change), true, JSON.stringify(delta));
      state = applyUpdate(state, change);
    }
    assert.equal(state.messages[0].parts[0].text, "Hi\u{1F600}\u0000\u2028<script>x</script>\u{1F600}");
    const retyped = append(6, { delta: "", offset: 26, part: { ...endedPart, type: "reasoning" } });
    const last = applyUpdate(state, retyped);
    assert.equal(last.messages[0].parts[0].type, "reasoning", "a `part` may change the kind (the gateway's word)");
    assert.equal(last.messages[0].parts[0].text, state.messages[0].parts[0].text);
  });

  it("checks an append against the part the same update upserts (was: appendsFit passed, applyUpdate threw)", () => {
    const mixed = { ...append(2, { offset: 2 }), parts: [answer("Hello", false)] };
    assert.equal(appendsFit(held(), mixed), false, "the upserted part is 5 long: an append at 2 is a gap");
    const { stream, es, thrown } = streamed(mixed);
    assert.equal(thrown, null, "nothing thrown out of the event listener");
    assert.equal(es.closed, true);
    assert.equal(stream.resuming, true);
    const fitting = { ...append(2, { offset: 5 }), parts: [answer("Hello", false)] };
    assert.equal(applyUpdate(held(), fitting).messages[0].parts[0].text, "Hellox");
  });

  it("re-syncs on an update it cannot read rather than throwing out of the listener", () => {
    const { stream, es, thrown } = streamed(update(2, { parts: {} }));
    assert.equal(thrown, null);
    assert.equal(es.closed, true);
    assert.equal(stream.resuming, true);
  });
});

describe("appends in sequence", () => {
  it("ignores duplicates and older seqs, takes whole parts between appends, drops a removed part's appends", () => {
    const { stream } = open();
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", held(), "1");
    es.emit("update", append(2, { delta: " there" }), "2");
    es.emit("update", append(2, { delta: " there" }), "2"); // the same event again
    es.emit("update", append(1, { delta: "??" }), "1"); // an older one
    assert.equal(stream.messages[0].parts[0].text, "Hi there");
    es.emit("update", update(3, { parts: [answer("Hi there, corrected", false)] }), "3");
    es.emit("update", append(4, { offset: 19, delta: "!" }), "4");
    assert.equal(stream.messages[0].parts[0].text, "Hi there, corrected!");
    assert.equal(es.closed, false);
    es.emit("update", update(5, { removedParts: [{ messageID: "msg_002", id: "prt_012" }] }), "5");
    es.emit("update", append(6, { offset: 20 }), "6");
    assert.equal(es.closed, true, "an append to a part removed is a gap");
    assert.equal(stream.resyncs, 1);
  });

  it("a snapshot during appends replaces the text; later appends go on from it", () => {
    const { stream } = open();
    const es = FakeEventSource.last;
    es.open();
    es.emit("snapshot", held(), "1");
    es.emit("update", append(2, { delta: " th" }), "2");
    const fresh = { info: assistant, parts: [answer("Hi there", false)] };
    es.emit("snapshot", session({ seq: 9, status: "running", messages: [fresh] }), "9"); // the gateway re-synced
    es.emit("update", append(10, { offset: 8, delta: "!" }), "10");
    assert.equal(stream.messages[0].parts[0].text, "Hi there!");
    assert.equal(stream.resyncs, 0);
  });

  it("resumes mid-answer with lastEventId and ends with exactly OpenCode's final text", async () => {
    const { stream, timers } = open();
    const first = FakeEventSource.last;
    first.open();
    first.emit("snapshot", held(), "1");
    first.emit("update", append(2, { delta: " \u{1F600}" }), "2");
    first.fail();
    assert.equal(await timers.runNext(), 250);
    const second = FakeEventSource.last;
    assert.equal(second.params.get("lastEventId"), "2");
    second.open();
    second.emit("update", append(3, { offset: 5, delta: " done" }), "3");
    const { text: _t, ...ended } = answer("", true);
    second.emit("update", append(4, { offset: 10, delta: "", part: ended }), "4");
    const final = "Hi \u{1F600} done";
    assert.deepEqual(stream.messages[0].parts[0], answer(final, true));
    const archived = { info: assistant, parts: [answer(final, true)] };
    second.emit("complete", session({ seq: 4, status: "completed", live: false, messages: [archived] }), "4");
    assert.equal(stream.completed, true);
    assert.equal(stream.messages[0].parts[0].text, final);
    assert.equal(stream.resyncs, 0);
  });
});
