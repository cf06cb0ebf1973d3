// Times and durations as the pages show them: the browser's own locale decides 12- or 24-hour clocks and the
// order of day and month; a time not of today carries its date (and its year, when not this year).

/** "14:03" today, "3 Dec, 14:03" this year, "3 Dec 2025, 14:03" before; `now` for tests. */
export function formatTime(ms, { now = Date.now(), locale = undefined } = {}) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date(now);
  const options = { hour: usesTwelveHours(locale) ? "numeric" : "2-digit", minute: "2-digit" }; // 2:05 PM, 09:00
  if (d.toDateString() !== today.toDateString()) {
    Object.assign(options, { day: "numeric", month: "short" });
    if (d.getFullYear() !== today.getFullYear()) options.year = "numeric";
  }
  return new Intl.DateTimeFormat(locale, options).format(d);
}

function usesTwelveHours(locale) {
  return Boolean(new Intl.DateTimeFormat(locale, { hour: "numeric" }).resolvedOptions().hour12);
}

/** The full date and time to the second, for a tooltip. */
export function formatFullTime(ms, { locale = undefined } = {}) {
  if (!ms) return "";
  return new Intl.DateTimeFormat(locale, { dateStyle: "full", timeStyle: "medium" }).format(new Date(ms));
}

/** "0.4 s", "4.2 s", "42 s", "3 min 5 s", "2 h 5 min", "3 d 4 h": short, two units at most. */
export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return "";
  if (ms < 10_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 24) return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** From `start` to `end` (or to `now` while it goes on); null without a start. */
export function durationBetween(start, end, now = Date.now()) {
  if (!start) return null;
  return Math.max(0, (end || now) - start);
}
