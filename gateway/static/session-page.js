// /ui/sessions/{id} — one session, live or archived (see session-view.js).

import { PendingPanel } from "./pending-view.js";
import { SessionView } from "./session-view.js";
import { UI, h, isAuthError, renderAuthNav, showLogin, takeToken } from "./ui.js";
import { sessionUsageLine } from "./usage-view.js";

const sessionId = document.body.dataset.id;
const token = takeToken();
renderAuthNav(token);
const app = document.getElementById("app");
const holder = h("div", {});
const usage = sessionUsageLine();
const pending = new PendingPanel();
app.replaceChildren(h("nav", { class: "crumbs" }, h("a", { href: UI }, "← All sessions")), usage.el, pending.el, holder);

let signedOut = false;
const view = new SessionView(holder, {
  token,
  onChange: (stream) => {
    usage.update(stream.session);
    pending.render(stream);
  },
  onFatal(stream) {
    if (isAuthError(stream.errorStatus)) {
      signedOut = true;
      view.close();
      showLogin(app, { status: stream.errorStatus, message: stream.error, needs: "a token for this session" });
    }
  },
});
view.open(sessionId);
window.addEventListener("pagehide", () => view.close());
// Back to this page from the back/forward cache: the stream pagehide closed opens again (was: the page stayed as
// it was left, "Live" and never changing).
window.addEventListener("pageshow", (event) => {
  if (event.persisted && !signedOut) view.open(sessionId);
});
