import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The examples import fairpick by its package name, which resolves to dist/ (built by `npm test`'s
// pretest step and by CI before the tests).
const run = promisify(execFile);
const root = new URL('../../', import.meta.url);
const doc = readFileSync(new URL('docs/http-clients.md', root), 'utf8');

async function example(name: string): Promise<string> {
  const { stdout } = await run(process.execPath, [`examples/${name}`], { cwd: root, timeout: 30_000 });
  return stdout;
}

describe.each(['fetch.mjs', 'undici.mjs', 'axios-agent.mjs'])('examples/%s', (name) => {
  it('is the example shown in docs/http-clients.md, word for word', () => {
    const shown = doc.split(`\`examples/${name}\``)[1]?.split('```js\n')[1]?.split('```')[0];
    expect(shown).toBe(readFileSync(new URL(`examples/${name}`, root), 'utf8'));
  });
});

it('examples/fetch.mjs gets 30 answers of 200 while web3 answers 503, which is retried and ejected', async () => {
  const out = await example('fetch.mjs');
  expect(out).toMatch(/^30 requests, every one 200; answered by \{ (web[12]: \d+(, )?){2} \}/);
  expect(out).not.toMatch(/web3: \d+/); // no answer ever came from web3
  expect(out).toMatch(/^web3: ejected, picks 3, failures 3, in flight 0$/m);
  expect(out).toMatch(/^web1: healthy, picks \d+, failures 0, in flight 0$/m);
});

it('examples/undici.mjs spreads 3:1 by weight through undici request and serves fetch', async () => {
  const lines = (await example('undici.mjs')).trim().split('\n');
  const served = lines.slice(0, 8).map((l) => l.split(' ')[1]);
  expect(lines.slice(0, 8).every((l) => l.startsWith('200 '))).toBe(true);
  expect(served.filter((w) => w === 'web1')).toHaveLength(6);
  expect(served.filter((w) => w === 'web2')).toHaveLength(2);
  expect(lines[8]).toMatch(/^fetch: 200 web[12] \/health$/);
});

it('examples/axios-agent.mjs spreads six concurrent axios requests 3:3 and leaves nothing in flight', async () => {
  const lines = (await example('axios-agent.mjs')).trim().split('\n');
  expect(lines.slice(0, 6).map((l) => l.split(' ')[1])).toEqual([
    '/orders/0',
    '/orders/1',
    '/orders/2',
    '/orders/3',
    '/orders/4',
    '/orders/5',
  ]);
  expect(lines.slice(6)).toEqual(['web1: picks 3, in flight 0', 'web2: picks 3, in flight 0']);
});
