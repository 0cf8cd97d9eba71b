// Checks the package as users receive it: the packed tarball passes publint --strict and
// "are the types wrong", and can be installed, imported (ESM) and required (CommonJS).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const run = (cmd, args, cwd = root) => {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd, stdio: 'inherit' });
};
const capture = (cmd, args, cwd = root) => execFileSync(cmd, args, { cwd, encoding: 'utf8' });

// dist/ is built by the caller (CI builds first); --ignore-scripts keeps prepare's build log out of the JSON.
const work = mkdtempSync(join(tmpdir(), 'fairpick-pack-'));
try {
  const packed = JSON.parse(capture('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work]));
  const tarball = join(work, packed[0].filename);
  console.log(`packed ${tarball} (${packed[0].entryCount} files)`);

  run('npx', ['publint', '--strict', tarball]);
  run('npx', ['attw', tarball, '--profile', 'node16']);

  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'smoke', private: true, version: '0.0.0' }));
  // undici is an optional peer dependency of fairpick/undici. It is packed from node_modules (what
  // `npm ci` installed), so that the install needs no registry: `npm ci` caches tarballs but not
  // the registry metadata an `undici@<version>` spec needs, and a fresh machine has none.
  const undiciPacked = JSON.parse(
    capture('npm', [
      'pack',
      '--json',
      '--ignore-scripts',
      '--pack-destination',
      work,
      join(root, 'node_modules/undici'),
    ]),
  );
  const undici = join(work, undiciPacked[0].filename);
  run('npm', ['install', '--no-audit', '--no-fund', '--offline', tarball, undici], app);

  const pickScript = (load) => `
${load}
const lb = createBalancer({ algorithm: 'round-robin', random: () => 0, backends: [{ id: 'a', weight: 2, url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }] });
const seen = [lb.pick().id, lb.pick().id, lb.pick().id].join(' ');
if (seen !== 'a b a') throw new Error('unexpected sequence ' + seen);
let code;
try { lb.pick({ exclude: new Set(['a', 'b']) }); } catch (e) { code = isFairpickError(e) && e.code; }
if (code !== 'ERR_NO_BACKEND') throw new Error('expected ERR_NO_BACKEND, got ' + code);
if (typeof httpProbe !== 'function' || typeof tcpProbe !== 'function' || typeof createBalancedAgent !== 'function') throw new Error('fairpick/node is missing exports');
if (typeof balancedFetch(lb) !== 'function') throw new Error('fairpick/fetch is missing balancedFetch');
const dispatcher = new BalancedDispatcher(lb);
if (typeof dispatcher.dispatch !== 'function') throw new Error('fairpick/undici is missing BalancedDispatcher');
dispatcher.close();
console.log('ok: ' + seen);
`;
  writeFileSync(
    join(app, 'esm.mjs'),
    pickScript(
      "import { createBalancer, isFairpickError } from 'fairpick';\nimport { createBalancedAgent, httpProbe, tcpProbe } from 'fairpick/node';\nimport { balancedFetch } from 'fairpick/fetch';\nimport { BalancedDispatcher } from 'fairpick/undici';",
    ),
  );
  writeFileSync(
    join(app, 'cjs.cjs'),
    pickScript(
      "const { createBalancer, isFairpickError } = require('fairpick');\nconst { createBalancedAgent, httpProbe, tcpProbe } = require('fairpick/node');\nconst { balancedFetch } = require('fairpick/fetch');\nconst { BalancedDispatcher } = require('fairpick/undici');",
    ),
  );
  run('node', ['esm.mjs'], app);
  run('node', ['cjs.cjs'], app);
  console.log('package check passed');
} finally {
  rmSync(work, { recursive: true, force: true });
}
