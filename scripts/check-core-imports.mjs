// Fails the build when the core bundle, or any chunk it loads, reaches for a Node built-in:
// `fairpick` must run in Node, Deno, Bun and browsers alike. Node-only code belongs behind its
// own subpath export (fairpick/node, ...).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// fairpick/fetch is held to the same rule: it needs nothing but the fetch API.
const ENTRIES = ['dist/index.js', 'dist/index.cjs', 'dist/fetch/index.js', 'dist/fetch/index.cjs'];
const BUILTINS =
  /\b(?:from|import|require)\s*\(?\s*['"](node:[^'"]+|fs|path|os|net|http|https|crypto|events|stream|buffer|url|util|child_process|dgram|tls|dns|zlib|worker_threads)['"]/g;
const RELATIVE = /\b(?:from|import|require)\s*\(?\s*['"](\.\.?\/[^'"]+)['"]/g;

const seen = new Set();
const queue = [...ENTRIES];
let failed = false;
while (queue.length > 0) {
  const file = queue.shift();
  if (seen.has(file)) continue;
  seen.add(file);
  if (!existsSync(file)) {
    failed = true;
    console.error(`${file} is missing`);
    continue;
  }
  const text = readFileSync(file, 'utf8');
  const builtins = [...text.matchAll(BUILTINS)].map((m) => m[1]);
  if (builtins.length > 0 || /['"]node:/.test(text)) {
    failed = true;
    console.error(`${file} imports Node built-ins: ${[...new Set(builtins)].join(', ') || 'a node: specifier'}`);
  }
  for (const m of text.matchAll(RELATIVE)) queue.push(join(dirname(file), m[1]));
}
if (failed) {
  console.error('The core and fairpick/fetch must not depend on Node built-ins.');
  process.exit(1);
}
console.log(`core and fetch bundles are free of Node built-ins (${[...seen].join(', ')})`);
