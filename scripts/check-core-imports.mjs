// Fails the build when the core bundle reaches for a Node built-in: `fairpick` must run in
// Node, Deno, Bun and browsers alike. Node-only code belongs behind its own subpath export.
import { readFileSync } from 'node:fs';

const CORE_FILES = ['dist/index.js', 'dist/index.cjs'];
const NODE_SPECIFIER =
  /\b(?:from|import|require)\s*\(?\s*['"](node:[^'"]+|fs|path|os|net|http|https|crypto|events|stream|buffer|url|util|child_process|dgram|tls|dns|zlib|worker_threads)['"]/g;

let failed = false;
for (const file of CORE_FILES) {
  const text = readFileSync(file, 'utf8');
  const found = [...text.matchAll(NODE_SPECIFIER)].map((m) => m[1]);
  if (found.length > 0) {
    failed = true;
    console.error(`${file} imports Node built-ins: ${[...new Set(found)].join(', ')}`);
  }
  if (/\bnode:/.test(text)) {
    failed = true;
    console.error(`${file} mentions a node: module`);
  }
}
if (failed) {
  console.error('The core must not depend on Node built-ins.');
  process.exit(1);
}
console.log(`core bundle is free of Node built-ins (${CORE_FILES.join(', ')})`);
