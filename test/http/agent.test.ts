/**
 * createBalancedAgent / createBalancedHttpsAgent against real node:http(s) servers on 127.0.0.1
 * (GitHub issue 6): per-request balancing with keep-alive (http.request and axios), connection
 * reuse, the Host header, pass-through, in-flight accounting, failures, ERR_NO_BACKEND, hashKey,
 * validation, and one HTTPS request with a self-signed certificate.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http, { type Agent, type IncomingMessage, type RequestOptions } from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import axios from 'axios';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Balancer, isFairpickError } from '../../src/index.js';
import { type BalancedAgentOptions, createBalancedAgent, createBalancedHttpsAgent } from '../../src/node/index.js';
import {
  backendsOf,
  balancer,
  closeAll,
  type EchoBody,
  hang,
  inFlight,
  respond,
  startServer,
  startServers,
  stat,
  streamAndHold,
  track,
  type Web,
  waitFor,
} from './support.js';

afterEach(closeAll);

function agentFor(lb: Balancer<Web>, options?: BalancedAgentOptions): Agent {
  return track(createBalancedAgent(lb, options));
}

interface Reply {
  readonly status: number;
  readonly server: string;
  readonly body: string;
}

/** One request through `http` (or `https`), read to the end. Rejects with the request's 'error'. */
function send(
  url: string,
  options: RequestOptions & { body?: string },
  transport: typeof http | typeof https = http,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const { body, ...rest } = options;
    const req = transport.request(url, rest, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          server: String(res.headers['x-server'] ?? ''),
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('createBalancedAgent with http.request', () => {
  it('balances each request (exact round-robin alternation over keep-alive) and reuses connections', async () => {
    const servers = await startServers(2);
    const lb = balancer({ backends: backendsOf(servers) });
    const agent = agentFor(lb);
    const seen: string[] = [];
    for (let i = 0; i < 20; i++) {
      const reply = await send(`http://fairpick/p/${i}?q=${i}`, { agent });
      expect(reply.status).toBe(200);
      const echo = JSON.parse(reply.body) as EchoBody;
      expect(echo.url).toBe(`/p/${i}?q=${i}`);
      seen.push(echo.server);
    }
    const first = seen[0] as string;
    const other = first === 's0' ? 's1' : 's0';
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? first : other)));
    for (const s of servers) {
      expect(s.hits).toBe(10);
      expect(s.connections).toBeGreaterThanOrEqual(1);
      expect(s.connections).toBeLessThanOrEqual(3); // keep-alive: reused per backend
    }
    await waitFor(() => inFlight(lb) === 0, { message: 'every request counted out' });
    expect(lb.stats().map((s) => [s.picks, s.successes, s.failures])).toEqual([
      [10, 10, 0],
      [10, 10, 0],
    ]);
  });

  it("sets the backend's Host header", async () => {
    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    const echo = JSON.parse((await send('http://fairpick/h', { agent })).body) as EchoBody;
    expect(echo.host).toBe(`127.0.0.1:${s.port}`);
    // also when the caller names the placeholder with a port and an explicit Host header
    const echo2 = JSON.parse(
      (await send('http://fairpick:8080/h2', { agent, headers: { host: 'fairpick:8080' } })).body,
    ) as EchoBody;
    expect(echo2).toMatchObject({ host: `127.0.0.1:${s.port}`, url: '/h2' });
    expect(s.hits).toBe(2);
  });

  it('passes requests to other hosts through as a plain keep-alive agent', async () => {
    const [pooled, other] = await startServers(2);
    if (pooled === undefined || other === undefined) throw new Error('servers');
    const lb = balancer({ backends: [{ id: 'pooled', url: pooled.url }] });
    const agent = agentFor(lb);
    for (let i = 0; i < 3; i++) {
      const echo = JSON.parse((await send(`${other.url}/direct`, { agent })).body) as EchoBody;
      expect(echo).toMatchObject({ server: 's1', url: '/direct', host: `127.0.0.1:${other.port}` });
    }
    expect(other.hits).toBe(3);
    expect(other.connections).toBeLessThanOrEqual(2);
    expect(pooled.hits).toBe(0);
    expect(stat(lb, 'pooled')).toMatchObject({ picks: 0, inFlight: 0 });
  });

  it('counts a request in flight until its response is consumed', async () => {
    const stream = streamAndHold('part-1;');
    const s = await startServer('a', stream);
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = http.request('http://fairpick/stream', { agent }, resolve);
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(200);
    const chunks: string[] = [];
    res.setEncoding('utf8');
    res.on('data', (c: string) => chunks.push(c));
    const ended = new Promise((resolve) => res.on('end', resolve));
    await waitFor(() => chunks.join('') === 'part-1;', { message: 'the first part arrived' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    stream.release('part-2');
    await ended;
    expect(chunks.join('')).toBe('part-1;part-2');
    await waitFor(() => stat(lb, 'a').inFlight === 0, { message: 'the request counted out' });
    expect(stat(lb, 'a')).toMatchObject({ successes: 1, failures: 0 });
  });

  it('counts a 500 as a failure, a 404 as a success, and obeys failureStatuses', async () => {
    const s = await startServer('a', (req, res, server) => respond(Number(req.url?.slice(1)))(req, res, server));
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    expect((await send('http://fairpick/500', { agent })).status).toBe(500);
    expect((await send('http://fairpick/404', { agent })).status).toBe(404);
    await waitFor(() => inFlight(lb) === 0);
    expect(stat(lb, 'a')).toMatchObject({ failures: 1, successes: 1 });

    const strict = agentFor(lb, { failureStatuses: [404] });
    await send('http://fairpick/404', { agent: strict });
    await send('http://fairpick/503', { agent: strict });
    await waitFor(() => inFlight(lb) === 0);
    expect(stat(lb, 'a')).toMatchObject({ failures: 2, successes: 2 });
  });

  it('a refused connection errors the request and counts a failure', async () => {
    const s = await startServer('a');
    await s.stop();
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    const error = await rejection(send('http://fairpick/refused', { agent }));
    expect(error.code).toBe('ECONNREFUSED');
    await waitFor(() => inFlight(lb) === 0, { message: 'the failed request counted out' });
    expect(stat(lb, 'a')).toMatchObject({ failures: 1, successes: 0, picks: 1 });
  });

  it("leaves an unhandled request 'error' unhandled: it throws, as without the agent's own listener", async () => {
    const s = await startServer('a');
    await s.stop();
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    const req = http.request('http://fairpick/unhandled', { agent });
    // emit('error') with no listener throws; catch it where it is thrown rather than crash the worker.
    const thrown = new Promise<unknown>((resolve) => {
      const emit = req.emit.bind(req);
      req.emit = ((event: string | symbol, ...args: unknown[]) => {
        try {
          return emit(event, ...args);
        } catch (error) {
          resolve(error);
          return true;
        }
      }) as typeof req.emit;
    });
    req.end();
    expect(await thrown).toMatchObject({ code: 'ECONNREFUSED' });
    await waitFor(() => inFlight(lb) === 0, { message: 'the failed request counted out' });
    expect(stat(lb, 'a')).toMatchObject({ failures: 1 });
  });

  it('passive health ejects a stopped backend and the others keep serving', async () => {
    const servers = await startServers(2);
    const lb = balancer({
      backends: backendsOf(servers),
      health: { passive: { consecutiveFailures: 2, baseEjectionMs: 60_000 } },
    });
    const agent = agentFor(lb);
    await servers[0]?.stop();
    const outcomes: string[] = [];
    await waitFor(
      async () => {
        try {
          outcomes.push((await send('http://fairpick/', { agent })).server);
        } catch (error) {
          outcomes.push((error as { code?: string }).code ?? 'error');
        }
        return stat(lb, 's0').state === 'ejected';
      },
      { message: 's0 ejected' },
    );
    expect(outcomes.filter((o) => o === 'ECONNREFUSED')).toHaveLength(2);
    for (let i = 0; i < 5; i++) expect((await send('http://fairpick/', { agent })).server).toBe('s1');
  });

  it("surfaces ERR_NO_BACKEND as the request's 'error' (empty pool, all marked down)", async () => {
    const empty = balancer({ backends: [] });
    const agent = agentFor(empty);
    const error = await rejection(send('http://fairpick/none', { agent }));
    expect(isFairpickError(error, 'ERR_NO_BACKEND')).toBe(true);

    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const agent2 = agentFor(lb);
    lb.markDown('a');
    const closed = new Promise<string[]>((resolve) => {
      const events: string[] = [];
      const req = http.request('http://fairpick/down', { agent: agent2 });
      req.on('error', (e) => events.push(`error:${(e as { code?: string }).code}`));
      req.on('close', () => resolve([...events, 'close']));
      req.end();
    });
    expect(await closed).toEqual(['error:ERR_NO_BACKEND', 'close']);
    expect(s.hits).toBe(0);
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, failures: 0, picks: 0 });
  });

  it('an abort through the signal is not a failure', async () => {
    const s = await startServer('a', hang);
    const lb = balancer({ backends: backendsOf([s]) });
    const agent = agentFor(lb);
    const controller = new AbortController();
    const pending = send('http://fairpick/hang', { agent, signal: controller.signal });
    await waitFor(() => s.hits === 1, { message: 'the request arrived' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    controller.abort();
    expect((await rejection(pending)).name).toBe('AbortError');
    await waitFor(() => stat(lb, 'a').inFlight === 0, { message: 'counted out' });
    expect(stat(lb, 'a')).toMatchObject({ failures: 0, successes: 0 });
    await waitFor(() => s.requestClosed(0), { message: 'the server sees the socket closed' });
  });

  it('hashKey routes by key (maglev and ring-hash stick)', async () => {
    const servers = await startServers(3);
    for (const algorithm of ['maglev', 'ring-hash'] as const) {
      const lb = balancer({ algorithm, backends: backendsOf(servers) });
      const agent = agentFor(lb, {
        hashKey: (req) => {
          const user = req.getHeader('x-user');
          return typeof user === 'string' ? user : undefined;
        },
      });
      const placement = new Map<string, string>();
      for (let round = 0; round < 3; round++) {
        for (let u = 0; u < 12; u++) {
          const user = `user-${u}`;
          const { server } = await send('http://fairpick/k', { agent, headers: { 'x-user': user } });
          if (round === 0) placement.set(user, server);
          else expect(server, `${algorithm} ${user}`).toBe(placement.get(user));
        }
      }
      // keys follow the balancer's own hash: the agent adds nothing of its own
      for (const [user, server] of placement) expect(lb.pick({ key: user }).id).toBe(server);
      expect(new Set(placement.values()).size).toBeGreaterThan(1);
    }
  });
});

describe('createBalancedAgent with axios', () => {
  it('balances each axios request with exact alternation and reuses connections', async () => {
    const servers = await startServers(2);
    const lb = balancer({ backends: backendsOf(servers) });
    const agent = agentFor(lb);
    const api = axios.create({ baseURL: 'http://fairpick', httpAgent: agent, proxy: false });
    const seen: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await api.get<EchoBody>(`/items/${i}`, { params: { page: i } });
      expect(res.status).toBe(200);
      expect(res.data.url).toBe(`/items/${i}?page=${i}`);
      seen.push(res.data.server);
    }
    const first = seen[0] as string;
    const other = first === 's0' ? 's1' : 's0';
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? first : other)));
    for (const s of servers) {
      expect(s.hits).toBe(10);
      expect(s.connections).toBeLessThanOrEqual(3);
      expect(s.requests.every((r) => r.headers.host === `127.0.0.1:${s.port}`)).toBe(true);
    }
    const posted = await api.post<EchoBody>('/items', { name: 'x' });
    expect(posted.data).toMatchObject({ method: 'POST', url: '/items', body: '{"name":"x"}' });
    await waitFor(() => inFlight(lb) === 0, { message: 'every request counted out' });
  });

  it('a 500 through axios is a failure, and ERR_NO_BACKEND rejects the call', async () => {
    const s = await startServer('a', respond(500));
    const lb = balancer({ backends: backendsOf([s]) });
    const api = axios.create({ baseURL: 'http://fairpick', httpAgent: agentFor(lb), proxy: false });
    const e1 = await rejection(api.get('/boom'));
    expect((e1 as { response?: { status?: number } }).response?.status).toBe(500);
    await waitFor(() => inFlight(lb) === 0);
    expect(stat(lb, 'a').failures).toBe(1);
    lb.markDown('a');
    const e2 = await rejection(api.get('/none'));
    expect(e2.code).toBe('ERR_NO_BACKEND');
    expect(s.hits).toBe(1);
  });
});

describe('createBalancedAgent with axios (cancellation)', () => {
  it("axios's signal cancelling a request is not a backend failure", async () => {
    const s = await startServer('a', hang);
    const lb = balancer({ backends: backendsOf([s]) });
    const api = axios.create({ baseURL: 'http://fairpick', httpAgent: agentFor(lb), proxy: false });
    const controller = new AbortController();
    const pending = api.get('/slow', { signal: controller.signal });
    await waitFor(() => s.hits === 1, { message: 'the request arrived' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    controller.abort();
    expect((await rejection(pending)).code).toBe('ERR_CANCELED');
    await waitFor(() => stat(lb, 'a').inFlight === 0, { message: 'counted out' });
    expect(stat(lb, 'a')).toMatchObject({ failures: 0, successes: 0 });
    await waitFor(() => s.requestClosed(0), { message: 'the server sees the socket closed' });
  });
});

describe('agent validation', () => {
  it('rejects a backend url with a path or the wrong scheme, and bad options, at creation', async () => {
    const s = await startServer('a');
    const cases: Array<[Web[], BalancedAgentOptions | undefined, RegExp, 'http' | 'https']> = [
      [[{ id: 'pathy', url: `${s.url}/base` }], undefined, /backend "pathy" url/, 'http'],
      [[{ id: 'tls', url: 'https://127.0.0.1:1' }], undefined, /backend "tls" url/, 'http'],
      [[{ id: 'plain', url: s.url }], undefined, /backend "plain" url/, 'https'],
      [[{ id: 'bad', url: 'not a url' }], undefined, /backend "bad" url/, 'http'],
      [[{ id: 'q', url: `${s.url}/?x=1` }], undefined, /backend "q" url/, 'http'],
      [[], { origin: 'nope' }, /options\.origin/, 'http'],
      [[], { failureStatuses: [42] }, /options\.failureStatuses/, 'http'],
      [[], { hashKey: 'x-user' as never }, /options\.hashKey/, 'http'],
    ];
    for (const [backends, options, field, kind] of cases) {
      const lb = balancer({ backends });
      let thrown: unknown;
      try {
        if (kind === 'http') track(createBalancedAgent(lb, options));
        else track(createBalancedHttpsAgent(lb, options));
      } catch (error) {
        thrown = error;
      }
      expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT'), String(field)).toBe(true);
      expect((thrown as Error).message).toMatch(field);
    }
  });
});

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('createBalancedHttpsAgent', () => {
  let dir = '';
  let tls: { key: string; cert: string } | undefined;
  beforeAll(() => {
    if (!hasOpenssl) return;
    dir = mkdtempSync(join(tmpdir(), 'fairpick-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    tls = { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  });
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  if (hasOpenssl) {
    it('sends a request over TLS to a picked https backend, verified with ca', async () => {
      if (tls === undefined) throw new Error('no certificate');
      const servers = await Promise.all([startServer('t0', undefined, { tls }), startServer('t1', undefined, { tls })]);
      const lb = balancer({ backends: backendsOf(servers) });
      const agent = track(createBalancedHttpsAgent(lb, { ca: tls.cert }));
      const warnings: string[] = [];
      const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? w.name}: ${w.message}`);
      process.on('warning', onWarning);
      try {
        const seen: string[] = [];
        for (let i = 0; i < 4; i++) {
          const reply = await send('https://fairpick/secure?x=1', { agent }, https);
          expect(reply.status).toBe(200);
          const echo = JSON.parse(reply.body) as EchoBody;
          expect(echo.url).toBe('/secure?x=1');
          expect(echo.host).toBe(servers.find((s) => s.name === echo.server)?.url.replace('https://', ''));
          seen.push(echo.server);
        }
        expect(seen.filter((x) => x === 't0')).toHaveLength(2);
        for (const s of servers) expect(s.connections).toBeLessThanOrEqual(2);
        await waitFor(() => inFlight(lb) === 0);
        // an unknown CA is refused (and counted as a failure)
        const strict = track(createBalancedHttpsAgent(lb));
        const error = await rejection(send('https://fairpick/secure', { agent: strict }, https));
        expect(error.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
        await waitFor(() => inFlight(lb) === 0);
        expect(lb.stats().reduce((n, x) => n + x.failures, 0)).toBe(1);
        await new Promise((resolve) => setImmediate(resolve));
      } finally {
        process.off('warning', onWarning);
      }
      // the backends are IP addresses: no SNI with an IP (RFC 6066), so no deprecation warning
      expect(warnings).toEqual([]);
    });
  } else {
    it('validation only (openssl not available): https backends are required', () => {
      const lb = balancer({ backends: [{ id: 'plain', url: 'http://127.0.0.1:1' }] });
      expect(() => createBalancedHttpsAgent(lb)).toThrow(/backend "plain" url/);
      const ok = balancer({ backends: [{ id: 'tls', url: 'https://127.0.0.1:1' }] });
      track(createBalancedHttpsAgent(ok));
    });
  }
});
