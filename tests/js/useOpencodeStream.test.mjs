// node --test: the React hook useOpencodeStream.ts, transpiled by TypeScript and rendered with react-dom in a
// happy-dom window; its types are checked by tsc --strict.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { DEPS, FakeEventSource, MODULE_URL, SID, STATIC, importDep, requireDep, session, update } from "./helpers.mjs";

const HOOK = join(STATIC, "useOpencodeStream.ts");
const BUILD = join(DEPS, "build");
const ts = requireDep("typescript");

/** The hook as plain JS, importing React from the dev dependencies and opencode-stream.js from gateway/static. */
function transpile() {
  mkdirSync(BUILD, { recursive: true });
  const { outputText } = ts.transpileModule(readFileSync(HOOK, "utf8"), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    fileName: HOOK,
  });
  const code = outputText.replace(/from\s+["']\.\/opencode-stream\.js["']/, `from ${JSON.stringify(MODULE_URL)}`);
  assert.notEqual(code, outputText, "the hook imports ./opencode-stream.js");
  const out = join(BUILD, "useOpencodeStream.mjs");
  writeFileSync(out, code);
  return out;
}

let React;
let createRoot;
let useOpencodeStream;
let window;

before(async () => {
  const { Window } = await importDep("happy-dom/lib/index.js");
  window = new Window({ url: "http://app.test/" });
  globalThis.window = window;
  globalThis.document = window.document;
  for (const name of ["navigator", "HTMLElement", "Node", "Event"]) {
    if (!(name in globalThis)) globalThis[name] = window[name]; // Node 20 has no navigator; 21+ has one
  }
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  React = requireDep("react");
  ({ createRoot } = requireDep("react-dom/client"));
  ({ useOpencodeStream } = await import(pathToFileURL(transpile()).href));
});

after(async () => {
  await window.happyDOM.close();
});

beforeEach(() => FakeEventSource.reset());

function mount(initialId, options) {
  const seen = [];
  function Probe({ sessionId }) {
    const state = useOpencodeStream(sessionId, { EventSource: FakeEventSource, random: () => 0, ...options });
    seen.push(state);
    return React.createElement("p", { id: "status" }, state.status ?? "none");
  }
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  const render = (sessionId) => React.act(() => root.render(React.createElement(Probe, { sessionId })));
  return { seen, container, root, render, latest: () => seen.at(-1) };
}

describe("useOpencodeStream", () => {
  it("returns the session as it streams, resumes after a drop, and closes on unmount", async () => {
    const view = mount(SID, { baseUrl: "http://gateway.test", token: "tok", minBackoffMs: 1 });
    await view.render(SID);
    assert.equal(FakeEventSource.instances.length, 1);
    const es = FakeEventSource.last;
    assert.equal(es.url, `http://gateway.test/sessions/${SID}/stream?token=tok`);
    assert.deepEqual(
      { status: view.latest().status, live: view.latest().live, messages: view.latest().messages },
      { status: null, live: null, messages: [] },
    );

    await React.act(async () => {
      es.open();
      es.emit("snapshot", session({ status: "running" }), "1");
    });
    assert.equal(view.latest().status, "running");
    assert.equal(view.latest().live, true);
    assert.equal(view.container.textContent, "running");

    const part = {
      id: "prt_1",
      messageID: "msg_2",
      type: "tool",
      tool: "bash",
      state: { status: "running", input: {} },
    };
    await React.act(async () => {
      es.emit("update", update(2, { messages: [{ id: "msg_2", role: "assistant" }], parts: [part] }));
    });
    assert.deepEqual(
      view.latest().toolCalls.map((c) => [c.tool, c.status]),
      [["bash", "running"]],
    );

    await React.act(async () => es.fail());
    assert.equal(view.latest().resuming, true);
    await React.act(() => new Promise((resolve) => setTimeout(resolve, 20))); // the backoff (1 ms) elapses
    const again = FakeEventSource.last;
    assert.notEqual(again, es);
    assert.equal(again.params.get("lastEventId"), "2");
    await React.act(async () => again.open());
    assert.equal(view.latest().resuming, false);
    await React.act(async () => {
      again.emit("update", update(3, { state: { status: "completed", error: null } }));
      again.emit("complete", { ...session({ status: "completed", seq: 3 }), live: false }, "3");
    });
    assert.equal(view.latest().status, "completed");
    assert.equal(view.latest().live, false);
    assert.equal(view.latest().completed, true);
    assert.equal(again.closed, true);

    await React.act(async () => view.root.unmount());
    assert.ok(FakeEventSource.instances.every((s) => s.closed));
  });

  it("shows text appended at its offset, and resumes by snapshot when an append does not fit", async () => {
    const view = mount(SID, { baseUrl: "http://gateway.test", minBackoffMs: 1 });
    await view.render(SID);
    const es = FakeEventSource.last;
    const text = { id: "prt_1", messageID: "msg_2", type: "text", text: "Hel", time: { start: 1 } };
    const held = [{ info: { id: "msg_2", role: "assistant" }, parts: [text] }];
    const append = (seq, offset, delta) => ({
      seq,
      type: "update",
      sessionId: SID,
      appends: [{ messageID: "msg_2", partID: "prt_1", field: "text", offset, length: offset + delta.length, delta }],
    });
    await React.act(async () => {
      es.open();
      es.emit("snapshot", session({ status: "running", messages: held }), "1");
      es.emit("update", append(2, 3, "lo"), "2");
    });
    assert.equal(view.latest().messages[0].parts[0].text, "Hello");
    await React.act(async () => es.emit("update", append(3, 9, "?"), "3"));
    assert.equal(view.latest().resuming, true);
    assert.equal(view.latest().messages[0].parts[0].text, "Hello");
    await React.act(() => new Promise((resolve) => setTimeout(resolve, 20)));
    const again = FakeEventSource.last;
    assert.notEqual(again, es);
    assert.equal(again.params.get("lastEventId"), null, "a fresh snapshot");
    await React.act(async () => view.root.unmount());
  });

  it("switches streams when the session id changes, showing nothing of the old one", async () => {
    const view = mount(SID);
    await view.render(SID);
    const first = FakeEventSource.last;
    await React.act(async () => {
      first.open();
      first.emit("snapshot", session({ status: "running" }), "1");
    });
    const other = "ses_0123456789abcdefABCDEF99";
    await view.render(other);
    assert.equal(first.closed, true);
    assert.equal(FakeEventSource.last.url, `/sessions/${other}/stream`);
    assert.ok(view.seen.filter((s) => s.status === "running").length > 0);
    assert.equal(view.latest().status, null, "the new id starts empty");
    await view.render(null);
    assert.ok(FakeEventSource.instances.every((s) => s.closed));
    assert.equal(view.latest().status, null);
    await React.act(async () => view.root.unmount());
  });

  it("opens nothing while disabled", async () => {
    const view = mount(SID, { enabled: false });
    await view.render(SID);
    assert.equal(FakeEventSource.instances.length, 0);
    await React.act(async () => view.root.unmount());
  });

  it("resumes in place with the token refreshToken gives when the old one expires", async () => {
    const view = mount(SID, { token: "old", refreshToken: async () => "new" });
    await view.render(SID);
    const first = FakeEventSource.last;
    await React.act(async () => {
      first.open();
      first.emit("snapshot", session({ seq: 4, status: "running" }), "4");
    });
    await React.act(async () => {
      first.emit("token-expired", { error: "token expired", exp: 1700000000 });
      await new Promise((r) => setImmediate(r));
    });
    const second = FakeEventSource.last;
    assert.notEqual(second, first);
    assert.equal(second.params.get("token"), "new");
    assert.equal(second.params.get("lastEventId"), "4");
    assert.equal(view.latest().status, "running", "the transcript is kept across the renewal");
    assert.equal(view.latest().error, null);
    await React.act(async () => view.root.unmount());
  });

  it("type-checks under tsc --strict against @types/react", () => {
    const config = {
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: "ES2022",
        module: "ESNext",
        moduleResolution: "Bundler",
        lib: ["ES2022", "DOM"],
        types: [],
        paths: { react: [join(DEPS, "node_modules/@types/react/index.d.ts")] },
      },
      files: [HOOK],
    };
    const tsconfig = join(BUILD, "tsconfig.json");
    writeFileSync(tsconfig, JSON.stringify(config));
    const tsc = join(DEPS, "node_modules/typescript/bin/tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", tsconfig], { encoding: "utf8", stdio: "pipe" });
    } catch (err) {
      assert.fail(`tsc found errors:\n${err.stdout}${err.stderr}`);
    }
  });
});
