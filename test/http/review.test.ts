/**
 * Review findings for the HTTP integrations: each test reproduces one defect against real
 * `node:http` servers on 127.0.0.1 (see the final report of the review for the details).
 */
import http, { type IncomingMessage } from 'node:http';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { balancedFetch } from '../../src/fetch/index.js';
import { type Balancer, createBalancer } from '../../src/index.js';
import { createBalancedAgent } from '../../src/node/index.js';
import { BalancedDispatcher } from '../../src/undici/index.js';
import {
  closeAll,
  type EchoBody,
  type Handler,
  hang,
  startServers,
  type TestServer,
  track,
  waitFor,
} from './support.js';

afterEach(closeAll);

interface Web {
  readonly id: string;
  readonly url: string;
}

function balancer(servers: readonly TestServer[]): Balancer<Web> {
  return track(
    createBalancer<Web>({
      algorithm: 'round-robin',
      backends: servers.map((s) => ({ id: s.name, url: s.url })),
      random: () => 0, // round-robin starts at the first backend
    }),
  );
}

function stat(lb: Balancer<Web>, id: string) {
  const s = lb.stats().find((x) => x.id === id);
  if (s === undefined) throw new Error(`no backend ${id}`);
  return s;
}

const inFlight = (lb: Balancer<Web>): number => lb.stats().reduce((n, s) => n + s.inFlight, 0);

describe('balancedFetch', () => {
  it("keeps a Request's method, headers and body when init leaves them undefined", async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = balancer([s]);
    const f = balancedFetch(lb);
    const req = new Request('http://fairpick/r', { method: 'PUT', body: 'hello', headers: { 'x-a': '1' } });
    // As with fetch itself, an undefined init member is absent (a wrapper passing `{ signal: opts.signal }`).
    // (Typed loosely: without exactOptionalPropertyTypes, TypeScript lets callers write this.)
    const init = {
      method: undefined,
      headers: undefined,
      body: undefined,
      signal: undefined,
    } as unknown as RequestInit;
    const res = await f(req, init);
    const echo = (await res.json()) as EchoBody;
    expect(echo).toMatchObject({ method: 'PUT', url: '/r', body: 'hello' });
    expect(echo.headers['x-a']).toBe('1');
    expect(inFlight(lb)).toBe(0);
  });

  it("keeps a Request's signal when init.signal is undefined: the caller can still abort", async () => {
    const [s] = (await startServers(1, (req) => req.resume())) as [TestServer];
    const lb = balancer([s]);
    const f = balancedFetch(lb);
    const controller = new AbortController();
    const req = new Request('http://fairpick/hang', { signal: controller.signal });
    const pending = f(req, { signal: undefined } as unknown as RequestInit);
    const settled = pending.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    await waitFor(() => s.hits === 1, { message: 'the request arrived' });
    controller.abort(new Error('caller gave up'));
    await waitFor(() => inFlight(lb) === 0, { message: 'the slot released' });
    expect(await settled).toMatchObject({ message: 'caller gave up' });
    expect(stat(lb, 's0').failures).toBe(0);
  });
});

describe('createBalancedAgent', () => {
  it('keeps a Host header the caller set to a virtual host name (as docs/http-clients.md says)', async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = balancer([s]);
    const agent = track(createBalancedAgent(lb));
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        'http://fairpick/v',
        { agent, headers: { host: 'api.example' } },
        (res: IncomingMessage) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            text += chunk;
          });
          res.on('end', () => resolve(text));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(body) as EchoBody).toMatchObject({ host: 'api.example', url: '/v' });
    await waitFor(() => inFlight(lb) === 0, { message: 'the slot released' });
  });
});

describe('BalancedDispatcher', () => {
  it('retries a retryOn response at once, without waiting for its (endless) body to end', async () => {
    const servers = await startServers(2);
    const [slow, good] = servers as [TestServer, TestServer];
    // A 503 whose body never ends.
    const endless503: Handler = (req, res) => {
      req.resume();
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.write('overloaded, and still talking');
    };
    slow.handler = endless503;
    const lb = balancer(servers);
    const d = track(new BalancedDispatcher(lb, { retries: 1, timeoutMs: 5000 }));
    let outcome: unknown = 'pending';
    const pending = request('http://fairpick/x', { dispatcher: d }).then(
      async (res) => {
        const text = await res.body.text();
        outcome = { status: res.statusCode, server: (JSON.parse(text) as EchoBody).server };
      },
      (error: unknown) => {
        outcome = error;
      },
    );
    await waitFor(() => outcome !== 'pending', { message: 'the retried request to settle' });
    await pending;
    expect(outcome).toEqual({ status: 200, server: 's1' });
    expect([slow.hits, good.hits]).toEqual([1, 1]);
    await waitFor(() => inFlight(lb) === 0, { message: 'every slot released' });

    // The dropped 503 failing later (its server goes away) neither retries again nor fails anything.
    await slow.stop();
    await waitFor(() => slow.sockets.size === 0);
    expect(good.hits).toBe(1);
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 0, failures: 1 });
    expect(stat(lb, 's1')).toMatchObject({ inFlight: 0, successes: 1, failures: 0 });
  });
});

describe('a failureStatuses predicate that throws', () => {
  // A user's predicate with a bug: the request fails with its error, and no slot stays in flight
  // (before, the slot leaked and least-connections saw a phantom request for ever).
  const broken = (): boolean => {
    throw new Error('predicate bug');
  };

  it('balancedFetch rejects with the error and releases the slot', async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = balancer([s]);
    const f = balancedFetch(lb, { failureStatuses: broken });
    await expect(f('/x')).rejects.toThrow('predicate bug');
    await waitFor(() => inFlight(lb) === 0, { message: 'the slot released' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 0, successes: 0 });
  });

  it('BalancedDispatcher fails the request with the error and releases the slot', async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = balancer([s]);
    const d = track(new BalancedDispatcher(lb, { failureStatuses: broken }));
    await expect(request('http://fairpick/x', { dispatcher: d })).rejects.toThrow('predicate bug');
    await waitFor(() => inFlight(lb) === 0, { message: 'the slot released' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 0, successes: 0 });
  });

  it('createBalancedAgent emits the error on the request and releases the slot', async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = balancer([s]);
    const agent = track(createBalancedAgent(lb, { failureStatuses: broken }));
    const events: string[] = [];
    await new Promise<void>((resolve) => {
      const req = http.request('http://fairpick/x', { agent }, (res) => {
        res.on('data', () => {});
        res.on('end', () => events.push('end'));
        res.on('error', (error) => events.push(`res error: ${error.message}`));
      });
      req.on('error', (error) => events.push(`req error: ${error.message}`));
      req.on('close', () => resolve());
      req.end();
    });
    expect(events).toContain('req error: predicate bug');
    expect(events).not.toContain('end'); // the body fails: it never looks complete
    await waitFor(() => inFlight(lb) === 0, { message: 'the slot released' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 0, successes: 0 });
  });
});

describe('a custom picker that throws on the retry pick', () => {
  // The first pick works, the second (the retry's) throws: the request fails with that error at
  // once, and no slot stays in flight. Before, the dispatcher threw it from a timer or from
  // undici's onError: uncaught, and the request never settled.
  function throwingOnRetry(servers: readonly TestServer[]): Balancer<Web> {
    let picks = 0;
    return track(
      createBalancer<Web>({
        algorithm: (endpoints) => ({
          pick(request) {
            if (++picks > 1) throw new Error('picker bug');
            return endpoints.find((e) => request.admits(e));
          },
        }),
        backends: servers.map((s) => ({ id: s.name, url: s.url })),
      }),
    );
  }

  it.each(['refused', 'timed out'] as const)('BalancedDispatcher: the first attempt %s', async (how) => {
    const servers = await startServers(2, how === 'timed out' ? hang : undefined);
    if (how === 'refused') await (servers[0] as TestServer).stop();
    const lb = throwingOnRetry(servers);
    const d = track(new BalancedDispatcher(lb, { retries: 1, ...(how === 'timed out' ? { timeoutMs: 200 } : {}) }));
    await expect(request('http://fairpick/x', { dispatcher: d })).rejects.toThrow('picker bug');
    await waitFor(() => inFlight(lb) === 0, { message: 'every slot released' });
  });

  it.each(['refused', 'timed out'] as const)('balancedFetch: the first attempt %s', async (how) => {
    const servers = await startServers(2, how === 'timed out' ? hang : undefined);
    if (how === 'refused') await (servers[0] as TestServer).stop();
    const lb = throwingOnRetry(servers);
    const f = balancedFetch(lb, { retries: 1, ...(how === 'timed out' ? { timeoutMs: 200 } : {}) });
    await expect(f('/x')).rejects.toThrow('picker bug');
    await waitFor(() => inFlight(lb) === 0, { message: 'every slot released' });
  });
});
