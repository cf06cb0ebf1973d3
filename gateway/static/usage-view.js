// What a run used — tokens by kind, cost and model steps: one session's (kept current from its stream, whose
// `update` events carry `usage` as it grows) and a ticket's total (GET /tickets/{id}/usage, refreshed).

import { GatewayError, fetchTicketUsage } from "./opencode-stream.js";
import { API, h } from "./ui.js";

const TICKET_REFRESH_MS = 5000;
// a token refused, or a ticket it does not cover: asking again gets the same answer (the page asks for a token)
const FINAL_STATUSES = new Set([401, 403, 404]);

const number = (n) => (Number(n) || 0).toLocaleString("en-US");

/** `2 steps · 200 in · 40 out · 0 reasoning · cache 0 read / 0 write · cost 0.0000`. */
export function usageText(usage) {
  const tokens = (usage && usage.tokens) || {};
  const cache = tokens.cache || {};
  return [
    `${number(usage && usage.steps)} steps`,
    `${number(tokens.input)} in`,
    `${number(tokens.output)} out`,
    `${number(tokens.reasoning)} reasoning`,
    `cache ${number(cache.read)} read / ${number(cache.write)} write`,
    `cost ${(Number(usage && usage.cost) || 0).toFixed(4)}`,
  ].join(" · ");
}

/** A line showing one session's usage; call `update(session)` after each change. */
export function sessionUsageLine() {
  const text = h("span", { dataset: { testid: "session-usage-text" } }, "");
  const el = h("p", { class: "muted", dataset: { testid: "session-usage" }, hidden: true }, "Usage: ", text);
  return {
    el,
    update(session) {
      if (!session || !session.usage) return;
      el.hidden = false;
      text.textContent = usageText(session.usage);
    },
  };
}

/** A line showing the ticket's total usage, asked again every few seconds while runs may go on. */
export function ticketUsageLine(ticketId, token) {
  const text = h("span", { dataset: { testid: "ticket-usage-text" } }, "…");
  const el = h("p", { class: "muted", dataset: { testid: "ticket-usage" } }, "Total usage: ", text);
  const refresh = async () => {
    try {
      text.textContent = usageText((await fetchTicketUsage(API, ticketId, { token })).total);
    } catch (err) {
      // the page shows its own errors (history, active session); the total keeps its last value
      if (err instanceof GatewayError && FINAL_STATUSES.has(err.status)) clearInterval(timer);
    }
  };
  const timer = setInterval(refresh, TICKET_REFRESH_MS); // frozen, not cleared, while the page is in the bfcache
  refresh();
  return el;
}
