// Validates AsyncAPI documents with the official parser (@asyncapi/parser, pinned in
// package-lock.json): `node validate.mjs FILE...`. One line per file, `ok FILE` or `FAIL FILE`
// followed by the parser's error diagnostics; exits 1 if any file fails. Warnings are printed but
// do not fail (the parser's style rules, e.g. a missing contact, are not part of the contract).
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const parser = new Parser();
let failed = 0;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning);
  if (document === undefined || errors.length > 0) {
    failed += 1;
    console.log(`FAIL ${file}`);
  } else {
    console.log(`ok ${file} (${document.channels().length} channels, ${document.operations().length} operations, ${document.components().messages().length} messages)`);
  }
  for (const d of [...errors, ...warnings]) {
    const level = d.severity === DiagnosticSeverity.Error ? "error" : "warning";
    console.log(`  ${level} ${d.code}: ${d.message} at /${d.path.join("/")}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
