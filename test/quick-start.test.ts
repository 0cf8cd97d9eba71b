import { readFileSync } from 'node:fs';
import { afterEach, expect, it, vi } from 'vitest';

const example = new URL('../examples/quick-start.mjs', import.meta.url);

afterEach(() => {
  vi.restoreAllMocks();
});

it('the README quick-start is the example file, word for word', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const block = /## Quick start[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBe(readFileSync(example, 'utf8'));
});

it('the quick-start runs and spreads 30 requests 2:1 over two real servers', async () => {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    lines.push(args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' '));
  });
  await import(example.href);
  // All 30 requests are in flight at once, so least-connections fills 2:1 by weight (D'Hondt).
  expect(lines[0]).toBe('answers: {"web1":20,"web2":10}');
  expect(lines.slice(1)).toEqual(['web1: weight 2, picks 20, in flight 0', 'web2: weight 1, picks 10, in flight 0']);
});
