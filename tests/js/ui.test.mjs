// node --test: the small words of gateway/static/ui.js the pages show (no DOM needed).
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { STATIC } from "./helpers.mjs";

const { countOf } = await import(pathToFileURL(join(STATIC, "ui.js")).href);

describe("countOf", () => {
  it("says 1 message, 0 and 2 messages", () => {
    assert.equal(countOf(1, "message"), "1 message");
    assert.equal(countOf(0, "message"), "0 messages");
    assert.equal(countOf(2, "message"), "2 messages");
  });
});
