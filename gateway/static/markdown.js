// Answers as markdown: marked parses (raw HTML in the text stays text, never markup), highlight.js colours fenced
// code of a named language, and DOMPurify sanitises what comes out (no scripts, handlers, javascript:/data: links
// or images: a model's answer may quote hostile text). The three libraries are vendored in ./vendor and served by
// the gateway itself (vendor/vendor.json: versions, licences, sha256), so the pages work offline under their CSP.

import DOMPurify from "./vendor/purify.es.js";
import hljs from "./vendor/highlight.min.js";
import { Marked } from "./vendor/marked.esm.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true, // a model's single newlines are line breaks, as they were shown before markdown
  renderer: {
    html({ text, block }) {
      return block ? `<p class="md-raw">${escapeHtml(text)}</p>` : escapeHtml(text);
    },
    image({ href, text }) {
      // no images: the CSP would block most, and a data: one could be anything; the address stays readable
      return escapeHtml(text ? `${text} (${href})` : href);
    },
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      const known = language && hljs.getLanguage(language);
      const body = known ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      const name = known ? ` data-language="${escapeHtml(language)}"` : "";
      return `<pre class="md-code"${name}><code class="hljs">${body}</code></pre>`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["img", "style", "form", "button", "textarea", "select", "iframe", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|[^:]*$)/i,
  RETURN_DOM_FRAGMENT: true,
};

if (DOMPurify.isSupported) {
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank"); // leaving the transcript open
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
}

/** The markdown `text` as HTML, not yet sanitised: raw HTML in it is escaped, fenced code highlighted. */
export function markdownToHtml(text) {
  return marked.parse(String(text ?? ""));
}

/**
 * The markdown `text` as sanitised DOM nodes (a fragment), with no whitespace between its blocks; as plain text
 * where DOMPurify cannot work (it would hand its input back unsanitised).
 */
export function renderMarkdown(text) {
  if (!DOMPurify.isSupported) return document.createTextNode(String(text ?? ""));
  const fragment = DOMPurify.sanitize(markdownToHtml(text), PURIFY);
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === 3 && !node.textContent.trim()) node.remove();
  }
  return fragment;
}
