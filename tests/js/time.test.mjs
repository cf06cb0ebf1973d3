// node --test: gateway/static/time.js — times carry their date when not of today, follow the locale's clock
// (12- or 24-hour), and durations read short.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { STATIC } from "./helpers.mjs";

const { durationBetween, formatDuration, formatTime } = await import(pathToFileURL(join(STATIC, "time.js")).href);

const NOW = new Date(2026, 11, 4, 15, 30, 0).getTime(); // local time, whatever the machine's zone

describe("formatTime", () => {
  it("shows only the time today, in the locale's clock", () => {
    const at = new Date(2026, 11, 4, 14, 5, 9).getTime();
    assert.equal(formatTime(at, { now: NOW, locale: "en-GB" }), "14:05");
    assert.match(formatTime(at, { now: NOW, locale: "en-US" }), /^2:05\sPM$/);
  });

  it("adds the date on another day, and the year in another year", () => {
    const yesterday = new Date(2026, 11, 3, 9, 0).getTime();
    assert.equal(formatTime(yesterday, { now: NOW, locale: "en-GB" }), "3 Dec, 09:00");
    assert.match(formatTime(yesterday, { now: NOW, locale: "en-US" }), /^Dec 3, 9:00\sAM$/);
    const lastYear = new Date(2025, 0, 31, 23, 59).getTime();
    assert.equal(formatTime(lastYear, { now: NOW, locale: "en-GB" }), "31 Jan 2025, 23:59");
  });

  it("is empty without a time", () => {
    assert.equal(formatTime(0), "");
    assert.equal(formatTime(null), "");
  });
});

describe("formatDuration", () => {
  it("reads short at every scale", () => {
    const cases = [
      [0, "0.0 s"],
      [420, "0.4 s"],
      [4_260, "4.2 s"],
      [42_900, "42 s"],
      [185_000, "3 min 5 s"],
      [180_000, "3 min"],
      [7_500_000, "2 h 5 min"],
      [3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"],
    ];
    for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, String(ms));
  });

  it("is empty for what is not a duration", () => {
    for (const value of [null, undefined, -1, Number.NaN, "5"]) assert.equal(formatDuration(value), "");
  });

  it("measures to now while it goes on", () => {
    assert.equal(durationBetween(1_000, 4_000, 9_000), 3_000);
    assert.equal(durationBetween(1_000, null, 9_000), 8_000);
    assert.equal(durationBetween(null, 4_000), null);
  });
});
