// node --test: gateway/static/markdown.js's markdown step (marked + highlight.js), without a DOM — markdown
// becomes markup, fenced code of a named language is highlighted, raw HTML stays text and images are not made.
// Sanitising needs a real browser's DOM (DOMPurify misjudges happy-dom's): the hostile cases, end to end
// through DOMPurify and the CSP, run in Chromium (tests/browser/test_rendering.py).
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { STATIC } from "./helpers.mjs";

const { markdownToHtml } = await import(pathToFileURL(join(STATIC, "markdown.js")).href);

describe("markdownToHtml", () => {
  it("renders emphasis, lists, inline code and links", () => {
    const out = markdownToHtml("Some **bold** and `code`:\n\n- one\n- two\n\n[docs](https://example.com/d)");
    assert.match(out, /<strong>bold<\/strong>/);
    assert.match(out, /<code>code<\/code>/);
    assert.equal(out.match(/<li>/g).length, 2);
    assert.match(out, /<a href="https:\/\/example\.com\/d">docs<\/a>/);
  });

  it("keeps single newlines as line breaks", () => {
    assert.match(markdownToHtml("one\ntwo"), /one<br>two/);
  });

  it("highlights fenced code of a named language and leaves other code plain", () => {
    const named = markdownToHtml("```python\ndef f(x):\n    return x\n```");
    assert.match(named, /^<pre class="md-code" data-language="python"><code class="hljs">/);
    assert.match(named, /<span class="hljs-keyword">def<\/span>/);
    const plain = markdownToHtml("```\nplain <b>text</b>\n```");
    assert.equal(plain, '<pre class="md-code"><code class="hljs">plain &lt;b&gt;text&lt;/b&gt;</code></pre>');
    const unknown = markdownToHtml('```nosuchlang" onclick="x\nbody\n```');
    assert.equal(unknown, '<pre class="md-code"><code class="hljs">body</code></pre>');
  });

  it("shows a code block still streaming (its fence not yet closed) as code", () => {
    assert.match(markdownToHtml("Here:\n\n```python\nprint(1"), /<pre class="md-code" data-language="python">/);
  });

  it("escapes raw HTML, block and inline, instead of passing it on", () => {
    assert.equal(markdownToHtml("<script>alert(1)</script>"), '<p class="md-raw">&lt;script&gt;alert(1)&lt;/script&gt;</p>');
    const inline = markdownToHtml('a <img src=x onerror="alert(1)"> b');
    assert.equal(inline, "<p>a &lt;img src=x onerror=&quot;alert(1)&quot;&gt; b</p>\n");
  });

  it("makes no images: their text and address stay readable", () => {
    const out = markdownToHtml("![a cat](data:image/svg+xml;base64,PHN2Zz4=)");
    assert.doesNotMatch(out, /<img/);
    assert.match(out, /a cat \(data:image\/svg\+xml;base64,PHN2Zz4=\)/);
  });
});
