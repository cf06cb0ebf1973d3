// node --test: every ES module the gateway serves from gateway/static parses (TypeScript's parser, as JS), and
// imports only names its sibling modules export, or the vendored libraries of vendor/, which are the packages'
// own files byte for byte (vendor/vendor.json: version, licence, sha256).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import { STATIC, requireDep } from "./helpers.mjs";

const ts = requireDep("typescript");
const modules = readdirSync(STATIC).filter((name) => name.endsWith(".js"));
const VENDOR = join(STATIC, "vendor");
const VENDORED = JSON.parse(readFileSync(join(VENDOR, "vendor.json"), "utf8"));

describe("gateway/static", () => {
  it("has the modules the pages load", () => {
    for (const name of ["opencode-stream.js", "ui.js", "session-view.js", "sessions-page.js", "session-page.js"]) {
      assert.ok(modules.includes(name), name);
    }
  });

  for (const name of modules) {
    it(`${name} parses and its relative imports resolve`, async () => {
      const source = readFileSync(join(STATIC, name), "utf8");
      const out = ts.transpileModule(source, {
        fileName: name,
        reportDiagnostics: true,
        compilerOptions: { allowJs: true, module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      });
      const problems = (out.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
      assert.deepEqual(problems, []);
      const file = ts.createSourceFile(name, source, ts.ScriptTarget.ES2022, true, ts.ScriptKind.JS);
      for (const statement of file.statements) {
        if (!ts.isImportDeclaration(statement)) continue;
        const from = statement.moduleSpecifier.text;
        assert.match(from, /^\.\/(vendor\/)?[\w.-]+\.js$/, `${name}: only sibling or vendored modules, no remote`);
        if (from.startsWith("./vendor/")) {
          assert.ok(VENDORED.files[from.slice("./vendor/".length)], `${name}: ${from} is recorded in vendor.json`);
          continue;
        }
        const names = statement.importClause?.namedBindings?.elements?.map((e) => (e.propertyName ?? e.name).text);
        if (!names || from === `./${name}` || !from.endsWith(".js")) continue;
        const sibling = readFileSync(join(STATIC, from.slice(2)), "utf8");
        const exported = new Set(
          [...sibling.matchAll(/export (?:async )?(?:function|class|const|let) (\w+)/g)].map((m) => m[1]),
        );
        for (const imported of names) assert.ok(exported.has(imported), `${name} imports ${imported} from ${from}`);
      }
    });
  }

  it("vendors exactly the files vendor.json records, unchanged, each with its licence", () => {
    const files = readdirSync(VENDOR).filter((name) => name.endsWith(".js"));
    assert.deepEqual(files.sort(), Object.keys(VENDORED.files).sort());
    for (const [name, entry] of Object.entries(VENDORED.files)) {
      const digest = createHash("sha256").update(readFileSync(join(VENDOR, name))).digest("hex");
      assert.equal(digest, entry.sha256, `${name}: not ${entry.package}@${entry.version}'s ${entry.from}`);
      assert.match(entry.license, /\S/);
      assert.ok(entry.licenseFiles.length > 0 && entry.licenseFiles.every((f) => existsSync(join(VENDOR, f))), name);
      const head = readFileSync(join(VENDOR, name), "utf8").slice(0, 600);
      assert.ok(head.includes(`${entry.version}`), `${name}: its header names version ${entry.version}`);
    }
  });

  it("opencode-stream.js loads in Node without a DOM", async () => {
    const mod = await import(pathToFileURL(join(STATIC, "opencode-stream.js")).href);
    assert.equal(typeof mod.openSessionStream, "function");
  });
});
