/**
 * The proxy's stats page in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core): the server-rendered table, and its in-place refresh when a backend goes down.
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  backendState,
  httpGet,
  ProcessRegistry,
  proxyReady,
  removeTempDirs,
  spawnProxy,
  startWebServer,
  until,
  writeConfig,
} from './support/processes.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = existsSync(executablePath);
const required = process.env.FAIRPICK_REQUIRE_SERVICES === '1';

// Without the background-networking flags Chromium tries to reach the network at start, and this
// machine's closed network refuses its connections.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const registry = new ProcessRegistry();
let browser: Browser | undefined;

afterEach(async () => {
  await browser?.close();
  browser = undefined;
  await registry.killAll();
});

afterAll(async () => {
  await removeTempDirs();
});

interface Row {
  id: string | undefined;
  state: string | undefined;
  requests: string | undefined;
}

function readTable(page: Page): Promise<Row[]> {
  return page.$$eval('table#backends tr[data-backend]', (rows) =>
    rows.map((row) => {
      const cell = (field: string) => row.querySelector(`td[data-field="${field}"]`)?.textContent?.trim();
      return { id: row.getAttribute('data-backend') ?? undefined, state: cell('state'), requests: cell('requests') };
    }),
  );
}

function cellText(page: Page, id: string, field: string): Promise<string | undefined> {
  return page.$eval(`table#backends tr[data-backend="${id}"] td[data-field="${field}"]`, (td) =>
    td.textContent?.trim(),
  );
}

describe('the stats page in headless Chromium', () => {
  if (!haveChromium && required) {
    it('needs Chromium', () => {
      throw new Error(
        `FAIRPICK_REQUIRE_SERVICES=1 but no Chromium at ${executablePath}: install the Debian package "chromium" (apt-get install -y chromium) or set CHROMIUM_PATH`,
      );
    });
    return;
  }
  const title = 'shows the backends, then a killed backend as down without a reload';
  if (!haveChromium) {
    it.skip(`${title} (skipped: no Chromium at ${executablePath}; apt-get install chromium or set CHROMIUM_PATH)`, () => {});
    return;
  }

  it(title, { timeout: 60_000 }, async () => {
    const [web1, web2] = await Promise.all([startWebServer(registry, 'web1'), startWebServer(registry, 'web2')]);
    const config = {
      name: 'browser',
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      backends: [
        { id: 'web1', url: web1.url },
        { id: 'web2', url: web2.url },
      ],
      algorithm: 'round-robin',
      // fall 3: a killed backend refuses at once (down after three checks), while one check slowed
      // by a loaded machine does not mark a live backend down.
      health: { check: { path: '/health', intervalMs: 200, timeoutMs: 180, rise: 1, fall: 3 } },
      log: { format: 'json', access: false },
    };
    const proxy = spawnProxy(registry, await writeConfig(config));
    const { admin, listen } = await proxyReady(proxy);
    await until(async () => (await backendState(admin, 'web1')) === 'healthy', 'web1 is healthy');
    await until(async () => (await backendState(admin, 'web2')) === 'healthy', 'web2 is healthy');

    browser = await chromium.launch({ executablePath, args: ARGS, timeout: 30_000 });
    const page = await browser.newPage();
    const response = await page.goto(`${admin}/`, { waitUntil: 'load', timeout: 20_000 });
    expect(response?.status()).toBe(200);

    // Server-rendered table and header.
    const rows = await readTable(page);
    expect(rows.map((r) => [r.id, r.state])).toEqual([
      ['web1', 'healthy'],
      ['web2', 'healthy'],
    ]);
    expect(await page.textContent('span#role')).toMatch(/standalone/);
    expect(await page.textContent('span#algorithm')).toMatch(/round-robin/);
    expect(await page.$('span#token')).not.toBeNull();

    // A marker that a reload would wipe: the page must update itself in place.
    // (Browser-side code is passed as strings: the test tsconfig has no DOM types.)
    await page.evaluate('window.fairpickMarker = 42');

    // Requests show up in the counters.
    const before = Number(await cellText(page, 'web2', 'requests'));
    expect(Number.isFinite(before)).toBe(true);
    for (let i = 0; i < 4; i++) expect((await httpGet(`${listen}/`)).status).toBe(200);
    await page.waitForFunction(
      `Number(document.querySelector('tr[data-backend="web2"] td[data-field="requests"]')?.textContent) > ${before}`,
      undefined,
      { timeout: 20_000, polling: 100 },
    );

    await web1.proc.kill();
    await page.waitForFunction(
      `document.querySelector('tr[data-backend="web1"] td[data-field="state"]')?.textContent?.trim() === 'down'`,
      undefined,
      { timeout: 20_000, polling: 100 },
    );
    expect(await cellText(page, 'web2', 'state')).toBe('healthy');
    expect(await page.evaluate('window.fairpickMarker')).toBe(42);
  });
});
