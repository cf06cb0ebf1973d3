// What a waiting session waits on (its `pending` requests): the command a tool wants to run, or the questions and
// their options, each with the CLI command that answers it. The session page shows a panel of them above the
// transcript (PendingPanel); the live list shows a one-line summary in the session's row (pendingSummary).

import { h, listOf, objectOf, visible } from "./ui.js";

function describe(request) {
  if (request.kind === "permission") {
    const command = objectOf(request.metadata).command;
    return `${request.permission ?? "permission"}: ${command ?? listOf(request.patterns).join(" ")}`;
  }
  return questionsOf(request).map((q) => q.question).join(" / ") || "a question";
}

/** The request's questions, each an object (OpenCode's values are read as its schema says, and may be otherwise). */
function questionsOf(request) {
  return listOf(request.questions).map(objectOf);
}

// The request ids the CLI takes (shared/answers.py): OpenCode's own. Any other id stays out of the command line a
// person pastes into a shell, where a `;` or `$(…)` in it would run.
const REQUEST_ID = /^(per|que)_?[0-9A-Za-z]{1,60}$/;

function answerCommand(sessionId, request) {
  if (typeof request.id !== "string" || !REQUEST_ID.test(request.id)) return null;
  if (request.kind === "permission") {
    return `opencode-sessions reply ${sessionId} ${request.id} --once|--always|--reject [--message TEXT] [--by WHO]`;
  }
  const choices = (Array.isArray(request.questions) ? request.questions : [null]).map(() => "--choice LABEL").join(" ");
  return `opencode-sessions answer ${sessionId} ${request.id} ${choices} [--by WHO]   (or --reject)`;
}

function answerLine(sessionId, request) {
  const command = answerCommand(sessionId, request);
  return command
    ? ["Answer with ", h("code", { dataset: { testid: "pending-answer" } }, command)]
    : "No opencode-sessions command answers it: its id is not of OpenCode's per_… or que_… form.";
}

/** One request: what is asked, the options of each question, and how to answer it. */
export function pendingRequest(sessionId, request) {
  const questions =
    request.kind === "question"
      ? h(
          "ol",
          { class: "pending-questions" },
          questionsOf(request).map((q) =>
            h(
              "li",
              { dataset: { testid: "pending-question" } },
              h("strong", {}, visible(q.question)),
              q.multiple ? h("span", { class: "muted" }, " (several answers allowed)") : null,
              h(
                "ul",
                { class: "pending-options" },
                listOf(q.options).map(objectOf).map((o) =>
                  h(
                    "li",
                    { dataset: { testid: "pending-option" } },
                    h("code", {}, visible(o.label)),
                    o.description ? ` — ${visible(o.description)}` : "",
                  ),
                ),
              ),
            ),
          ),
        )
      : null;
  return h(
    "section",
    { class: `pending-request pending-${request.kind}`, dataset: { testid: "pending-request", kind: request.kind } },
    h(
      "p",
      { class: "pending-what" },
      request.kind === "permission" ? "Waiting for permission to run " : "Waiting for an answer: ",
      request.kind === "permission"
        ? h("code", { dataset: { testid: "pending-command" } }, visible(describe(request)))
        : `${questionsOf(request).length} question(s)`,
    ),
    questions,
    h("p", { class: "pending-how muted" }, answerLine(sessionId, request)),
  );
}

/** The session page's panel: shown while the stream's `pending` holds a request. */
export class PendingPanel {
  constructor() {
    this.el = h("div", { class: "banner pending-panel", role: "status", dataset: { testid: "pending" }, hidden: true });
  }

  render(stream) {
    const pending = stream.pending ?? [];
    const sessionId = stream.session ? stream.session.sessionId : stream.sessionId;
    this.el.hidden = pending.length === 0;
    this.el.replaceChildren(...pending.map((request) => pendingRequest(sessionId, request)));
  }
}

/** The live list's line for a waiting session (null when it waits on nothing). */
export function pendingSummary(summary) {
  const pending = summary.pending ?? [];
  if (pending.length === 0) return null;
  const more = pending.length > 1 ? ` (+${pending.length - 1} more)` : "";
  const what = pending[0].kind === "permission" ? "permission" : "an answer";
  return h(
    "span",
    { class: "pending-summary", dataset: { testid: "pending-summary" } },
    `waits for ${what}: ${visible(describe(pending[0]))}${more}`,
  );
}
