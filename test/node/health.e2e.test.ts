import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { type Balancer, createBalancer, type HealthEvent } from '../../src/index.js';
import { httpProbe } from '../../src/node/index.js';
import { freeTcpPort } from '../support/ports.js';

interface Web {
  readonly id: string;
  readonly url: string;
}

/** A real web server on 127.0.0.1 that can be stopped and started again on the same port. */
class WebServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  async start(): Promise<void> {
    const server = createServer((_req, res) => res.end('ok'));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // A port of its own rather than port 0: nothing else may take it while the server is stopped.
    if (this.port === 0) this.port = await freeTcpPort();
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    this.port = address.port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

const webs: WebServer[] = [];
let lb: Balancer<Web> | undefined;

afterEach(async () => {
  lb?.close();
  await Promise.all(webs.splice(0).map((w) => w.stop()));
});

/** Polls `condition` every 20 ms until it holds, failing after a generous deadline (no duration is asserted). */
async function until(condition: () => boolean, what: string, deadlineMs = 15_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

it('a stopped backend is marked down, gets no picks, and returns through slow start when restarted', async () => {
  const a = new WebServer();
  const b = new WebServer();
  webs.push(a, b);
  await a.start();
  await b.start();
  const events: HealthEvent<Web>[] = [];
  lb = createBalancer<Web>({
    algorithm: 'round-robin',
    backends: [
      { id: 'a', url: `http://127.0.0.1:${a.port}` },
      { id: 'b', url: `http://127.0.0.1:${b.port}` },
    ],
    health: {
      // Generous timeouts, so that a busy machine does not fail the healthy backend's checks.
      active: { probe: httpProbe(), intervalMs: 150, timeoutMs: 120, rise: 2, fall: 2 },
      slowStartMs: 600,
      panicThreshold: 0,
    },
  });
  const balancer = lb;
  balancer.on('health', (e) => events.push(e));
  const state = (id: string) => balancer.stats().find((s) => s.id === id)?.state;

  await until(() => balancer.stats().every((s) => s.lastCheck?.ok === true), 'both backends passed a check');
  expect(state('b')).toBe('healthy');

  await b.stop();
  await until(() => state('b') === 'down', 'b is marked down');
  expect(events.map((e) => `${e.id}:${e.from}->${e.to}:${e.reason}`)).toEqual(['b:healthy->down:probe']);
  for (let i = 0; i < 50; i++) expect(balancer.pick().id).toBe('a');

  await b.start();
  await until(() => state('b') === 'slow-start', 'b comes back in slow start');
  const ramping = balancer.stats().find((s) => s.id === 'b');
  expect(ramping?.effectiveWeight).toBeLessThan(1);
  await until(() => state('b') === 'healthy', 'b finishes slow start');
  expect(events.map((e) => `${e.id}:${e.from}->${e.to}:${e.reason}`)).toEqual([
    'b:healthy->down:probe',
    'b:down->slow-start:probe',
    'b:slow-start->healthy:recovered',
  ]);
  const picks = new Set(Array.from({ length: 10 }, () => balancer.pick().id));
  expect(picks).toEqual(new Set(['a', 'b']));
});
