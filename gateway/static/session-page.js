// /ui/sessions/{id} — one session, live or archived (see session-view.js).

import { PendingPanel } from "./pending-view.js";
import { SessionView } from "./session-view.js";
import { UI, h, isAuthError, renderAuthNav, showLogin, takeToken } from "./ui.js";

const sessionId = document.body.dataset.id;
const token = takeToken();
renderAuthNav(token);
const app = document.getElementById("app");
const holder = h("div", {});
const pending = new PendingPanel();
app.replaceChildren(h("nav", { class: "crumbs" }, h("a", { href: UI }, "← All sessions")), pending.el, holder);

const view = new SessionView(holder, {
  token,
  onChange: (stream) => pending.render(stream),
  onFatal(stream) {
    if (isAuthError(stream.errorStatus)) {
      view.close();
      showLogin(app, { status: stream.errorStatus, message: stream.error, needs: "a token for this session" });
    }
  },
});
view.open(sessionId);
window.addEventListener("pagehide", () => view.close());
