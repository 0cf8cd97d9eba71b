/**
 * `fairpick/undici` against real `node:http` servers on 127.0.0.1: balancing through every undici
 * API, one pool per backend, accounting, retries and timeouts, undici issue 4839, the dispatcher's
 * lifecycle, the global dispatcher (undici's and Node's own fetch) and option validation.
 */
import type { ServerResponse } from 'node:http';
import { Readable, Writable } from 'node:stream';
import {
  Agent,
  type Dispatcher,
  errors,
  getGlobalDispatcher,
  Pool,
  request,
  setGlobalDispatcher,
  stream,
  fetch as undiciFetch,
} from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
  FairpickError,
  isFairpickError,
} from '../../src/index.js';
import { BalancedDispatcher, type BalancedDispatcherOptions, type UrlBackend } from '../../src/undici/index.js';
import {
  closeAll,
  defer,
  type EchoBody,
  type Handler,
  hang,
  respond,
  sleep,
  startServer,
  startServers,
  streamAndHold,
  type TestServer,
  track,
  waitFor,
} from './support.js';

afterEach(closeAll);

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

type Backend = UrlBackend & { readonly id: string };

function backendsOf(servers: readonly TestServer[], suffix = ''): Backend[] {
  return servers.map((s) => ({ id: s.name, url: s.url + suffix }));
}

/** A balancer over the servers (round-robin from the first backend unless told), closed after the test. */
function balancer(servers: readonly TestServer[], options: Partial<BalancerOptions<Backend>> = {}): Balancer<Backend> {
  return track(
    createBalancer<Backend>({
      algorithm: 'round-robin',
      backends: backendsOf(servers),
      random: () => 0,
      ...options,
    } as BalancerOptions<Backend>),
  );
}

/** A BalancedDispatcher, destroyed after the test (a no-op when the test closed it). */
function dispatcher(lb: Balancer<Backend>, options?: BalancedDispatcherOptions): BalancedDispatcher<Backend> {
  return track(new BalancedDispatcher(lb, options));
}

function stat(lb: Balancer<Backend>, id: string) {
  const s = lb.stats().find((x) => x.id === id);
  if (s === undefined) throw new Error(`no backend ${id}`);
  return s;
}

const inFlight = (lb: Balancer<Backend>): number => lb.stats().reduce((sum, s) => sum + s.inFlight, 0);

/** `undici.request` to the placeholder, body read as text. */
async function get(
  d: Dispatcher,
  path = '/',
  options: Omit<Parameters<typeof request>[1] & object, 'dispatcher'> = {},
): Promise<{ status: number; text: string; server: string | undefined }> {
  const res = await request(`http://fairpick${path}`, { ...options, dispatcher: d });
  const text = await res.body.text();
  const server = res.headers['x-server'];
  return { status: res.statusCode, text, server: typeof server === 'string' ? server : undefined };
}

/** What a test server receives, as the JSON `echo` answers with. */
async function echoOf(d: Dispatcher, path = '/'): Promise<EchoBody> {
  const { status, text } = await get(d, path);
  expect(status).toBe(200);
  return JSON.parse(text) as EchoBody;
}

/** A handler that holds every request until `answer(status)` is called. */
function held(): Handler & { answer(status: number, body?: string): void; readonly waiting: number } {
  const open: ServerResponse[] = [];
  const handler: Handler = (req, res, server) => {
    req.resume();
    open.push(res);
    res.on('close', () => {
      const i = open.indexOf(res);
      if (i >= 0) open.splice(i, 1);
    });
    res.setHeader('x-server', server.name);
  };
  return Object.defineProperties(handler, {
    answer: {
      value(status: number, body = `held ${status}`) {
        for (const res of open.splice(0)) {
          res.writeHead(status, { 'content-type': 'text/plain' });
          res.end(body);
        }
      },
    },
    waiting: { get: () => open.length },
  }) as Handler & { answer(status: number, body?: string): void; readonly waiting: number };
}

/** Rejects with a clear message when `promise` has not settled within a generous deadline. */
function within<T>(promise: Promise<T>, what: string, ms = 8_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled after ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A Writable collecting what `undici.stream` writes. */
function collector(): { sink: Writable; text(): string } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { sink, text: () => Buffer.concat(chunks).toString('utf8') };
}

/** A dispatch handler in undici's newer form that records what it sees. */
function modernHandler(onStart?: (controller: Dispatcher.DispatchController) => void) {
  const seen = {
    started: 0,
    status: 0,
    headers: {} as Record<string, string | string[] | undefined>,
    body: '',
    ended: false,
    error: null as Error | null,
  };
  let settle: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(controller) {
      seen.started++;
      onStart?.(controller);
    },
    onResponseStart(_controller, statusCode, headers) {
      seen.status = statusCode;
      seen.headers = headers;
    },
    onResponseData(_controller, chunk) {
      seen.body += chunk.toString('utf8');
    },
    onResponseEnd() {
      seen.ended = true;
      settle();
    },
    onResponseError(_controller, error) {
      seen.error = error;
      settle();
    },
  };
  return { handler, seen, done };
}

/** A dispatch handler in undici's original form that records what it sees. */
function legacyHandler() {
  const seen = { status: 0, body: '', completed: false, error: null as Error | null };
  let settle: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const handler = {
    onConnect() {},
    onHeaders(statusCode: number) {
      seen.status = statusCode;
      return true;
    },
    onData(chunk: Buffer) {
      seen.body += chunk.toString('utf8');
      return true;
    },
    onComplete() {
      seen.completed = true;
      settle();
    },
    onError(error: Error) {
      seen.error = error;
      settle();
    },
  } as unknown as Dispatcher.DispatchHandler;
  return { handler, seen, done };
}

/** Every pool a dispatcher's `factory` made, in order, with the origin it was made for. */
function poolFactory() {
  const made: { origin: string; pool: Pool; close: ReturnType<typeof vi.fn> }[] = [];
  const factory = (origin: string, options: Pool.Options): Dispatcher => {
    const pool = new Pool(origin, options);
    // Counts the calls from outside: undici's close() calls itself again with a callback.
    const close = vi.fn();
    const original = pool.close.bind(pool) as (callback?: () => void) => Promise<void> | undefined;
    (pool as unknown as { close: (callback?: () => void) => unknown }).close = (callback) => {
      if (callback === undefined) close();
      return original(callback);
    };
    made.push({ origin, pool, close });
    return pool;
  };
  return { made, factory };
}

// ---------------------------------------------------------------------------------------------
// Balancing through each undici API
// ---------------------------------------------------------------------------------------------

type Api = (d: Dispatcher, path: string) => Promise<EchoBody>;

const APIS: ReadonlyArray<readonly [string, Api]> = [
  [
    'undici.request',
    async (d, path) => {
      const res = await request(`http://fairpick${path}`, { dispatcher: d });
      return (await res.body.json()) as EchoBody;
    },
  ],
  [
    'undici.fetch',
    async (d, path) => {
      const res = await undiciFetch(`http://fairpick${path}`, { dispatcher: d });
      return (await res.json()) as EchoBody;
    },
  ],
  [
    'dispatcher.request',
    async (d, path) => {
      const res = await d.request({ origin: 'http://fairpick', path, method: 'GET' });
      return (await res.body.json()) as EchoBody;
    },
  ],
  [
    'undici.stream',
    async (d, path) => {
      const out = collector();
      await stream(`http://fairpick${path}`, { dispatcher: d, method: 'GET', opaque: null }, () => out.sink);
      return JSON.parse(out.text()) as EchoBody;
    },
  ],
];

describe.each(APIS)('%s through BalancedDispatcher', (_name, call) => {
  it('goes round-robin over 3 backends exactly, with path, query and Host of the backend', async () => {
    const servers = await startServers(3);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    const seen: EchoBody[] = [];
    for (let i = 0; i < 12; i++) seen.push(await call(d, `/p/${i}?q=${i}`));
    const order = seen.map((e) => e.server);
    expect(new Set(order.slice(0, 3)).size).toBe(3); // one round visits each backend once
    expect(order.slice(3)).toEqual(order.slice(0, -3)); // and the rounds repeat
    for (const s of servers) expect(s.hits).toBe(4);
    for (const [i, e] of seen.entries()) {
      const server = servers.find((s) => s.name === e.server) as TestServer;
      expect(e.url).toBe(`/p/${i}?q=${i}`);
      expect(e.host).toBe(`127.0.0.1:${server.port}`);
    }
    expect(inFlight(lb)).toBe(0);
    expect(lb.stats().map((s) => s.successes)).toEqual([4, 4, 4]);
  });

  it('follows weights 3:1 exactly', async () => {
    const [heavy, light] = (await startServers(2)) as [TestServer, TestServer];
    const lb = track(
      createBalancer<Backend>({
        algorithm: 'round-robin',
        backends: [
          { id: heavy.name, url: heavy.url, weight: 3 },
          { id: light.name, url: light.url, weight: 1 },
        ],
      }),
    );
    const d = dispatcher(lb);
    for (let i = 0; i < 40; i++) await call(d, '/w');
    expect([heavy.hits, light.hits]).toEqual([30, 10]);
  });

  it('prepends the backend base path', async () => {
    const [s] = (await startServers(1)) as [TestServer];
    const lb = track(
      createBalancer<Backend>({ algorithm: 'round-robin', backends: [{ id: 'b', url: `${s.url}/base/v1/` }] }),
    );
    const d = dispatcher(lb);
    const e = await call(d, '/users/7?x=1');
    expect(e.url).toBe('/base/v1/users/7?x=1');
  });

  it('sends other origins through the passthrough, uncounted', async () => {
    const servers = await startServers(2);
    const other = await startServer('other');
    const lb = balancer(servers);
    const d = dispatcher(lb);
    const res = await request(`${other.url}/direct?z=1`, { dispatcher: d });
    expect(res.statusCode).toBe(200);
    const e = (await res.body.json()) as EchoBody;
    expect(e.server).toBe('other');
    expect(e.url).toBe('/direct?z=1');
    const via = await undiciFetch(`${other.url}/f`, { dispatcher: d });
    expect(((await via.json()) as EchoBody).server).toBe('other');
    expect(other.hits).toBe(2);
    expect(servers.map((s) => s.hits)).toEqual([0, 0]);
    expect(lb.stats().map((s) => s.picks)).toEqual([0, 0]);
    await call(d, '/balanced'); // the placeholder is still balanced
    expect(lb.stats().reduce((n, s) => n + s.picks, 0)).toBe(1);
  });
});

describe('passthrough and placeholder options', () => {
  it('uses a custom passthrough, and does not close it', async () => {
    const servers = await startServers(2);
    const other = await startServer('other');
    class CountingAgent extends Agent {
      dispatched = 0;
      override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
        this.dispatched++;
        return super.dispatch(options, handler);
      }
    }
    const passthrough = track(new CountingAgent());
    const lb = balancer(servers);
    const d = new BalancedDispatcher(lb, { passthrough });
    const res = await request(`${other.url}/x`, { dispatcher: d });
    expect(((await res.body.json()) as EchoBody).server).toBe('other');
    await echoOf(d, '/y');
    expect(passthrough.dispatched).toBe(1);
    await d.close();
    expect(passthrough.closed).toBe(false);
  });

  it('balances a custom placeholder origin, and passes http://fairpick through', async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    const seen: string[] = [];
    const passthrough = track(
      new (class extends Agent {
        override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
          seen.push(String(options.origin));
          handler.onError?.(new Error('not here'));
          return false;
        }
      })(),
    );
    const d = dispatcher(lb, { origin: 'http://api.internal', passthrough });
    const res = await request('http://API.internal:80/a', { dispatcher: d });
    expect(((await res.body.json()) as EchoBody).url).toBe('/a');
    await expect(request('http://fairpick/a', { dispatcher: d })).rejects.toThrow('not here');
    expect(seen).toEqual(['http://fairpick']);
  });

  it('passes the key function to hash algorithms', async () => {
    const servers = await startServers(3);
    const lb = balancer(servers, { algorithm: 'maglev' } as Partial<BalancerOptions<Backend>>);
    const d = dispatcher(lb, {
      key: (req) => {
        const headers = req.headers as Record<string, string> | undefined;
        return headers?.['x-user'];
      },
    });
    for (const user of ['ann', 'bob', 'cyd', 'dee']) {
      const first = await get(d, '/k', { headers: { 'x-user': user } });
      for (let i = 0; i < 4; i++) {
        expect((await get(d, '/k', { headers: { 'x-user': user } })).server).toBe(first.server);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------------------------

describe('pools', () => {
  it('creates one pool per backend, lazily, through the factory with its origin', async () => {
    const servers = await startServers(3);
    const lb = balancer(servers);
    const { made, factory } = poolFactory();
    const d = dispatcher(lb, { factory, connections: 4 });
    expect(made).toHaveLength(0);
    await echoOf(d);
    expect(made).toHaveLength(1);
    for (let i = 0; i < 11; i++) await echoOf(d);
    expect(made.map((m) => m.origin).sort()).toEqual(servers.map((s) => s.url).sort());
  });

  it('closes the pool of a removed backend; a re-added backend gets a new one', async () => {
    const servers = await startServers(3);
    const [, s1] = servers as [TestServer, TestServer, TestServer];
    const lb = balancer(servers);
    const d = dispatcher(lb);
    // The default pools are undici Pools; each one's 'connect' is re-emitted as [dispatcher, pool, client].
    const pools = new Map<string, Set<Dispatcher>>();
    d.on('connect', (origin: URL, targets: readonly Dispatcher[]) => {
      expect(targets[0]).toBe(d);
      const pool = targets[1] as Dispatcher;
      const set = pools.get(origin.origin) ?? new Set();
      set.add(pool);
      pools.set(origin.origin, set);
    });
    for (let i = 0; i < 6; i++) await echoOf(d);
    const first = [...(pools.get(s1.url) ?? [])] as Pool[];
    expect(first).toHaveLength(1);
    expect(first[0]?.closed).toBe(false);
    const removed = lb.remove(s1.name);
    expect(first[0]?.closed).toBe(true);
    for (let i = 0; i < 4; i++) expect((await echoOf(d)).server).not.toBe(s1.name);
    lb.add(removed);
    for (let i = 0; i < 6; i++) await echoOf(d);
    const now = [...(pools.get(s1.url) ?? [])] as Pool[];
    expect(now).toHaveLength(2);
    expect(now[1]).not.toBe(now[0]);
    expect(now[1]?.closed).toBe(false);
  });

  it('calls close() of a factory-made dispatcher when its backend is removed', async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    const { made, factory } = poolFactory();
    const d = dispatcher(lb, { factory });
    for (let i = 0; i < 4; i++) await echoOf(d);
    const of1 = made.find((m) => m.origin === servers[1]?.url);
    expect(of1?.close).toHaveBeenCalledTimes(0);
    lb.remove(servers[1]?.name ?? '');
    expect(of1?.close).toHaveBeenCalledTimes(1);
    expect(made.find((m) => m.origin === servers[0]?.url)?.close).toHaveBeenCalledTimes(0);
  });

  it('gives a backend whose url changed through set() a new pool', async () => {
    const [a, b, c] = (await startServers(3)) as [TestServer, TestServer, TestServer];
    const lb = track(
      createBalancer<Backend>({
        algorithm: 'round-robin',
        backends: [
          { id: 'x', url: a.url },
          { id: 'y', url: b.url },
        ],
        random: () => 0,
      }),
    );
    const { made, factory } = poolFactory();
    const d = dispatcher(lb, { factory });
    for (let i = 0; i < 4; i++) await echoOf(d);
    expect(made.map((m) => m.origin)).toEqual([a.url, b.url]);
    lb.set([
      { id: 'x', url: c.url },
      { id: 'y', url: b.url },
    ]);
    a.reset();
    for (let i = 0; i < 4; i++) await echoOf(d);
    expect(a.hits).toBe(0);
    expect(c.hits).toBe(2);
    expect(made.map((m) => m.origin)).toEqual([a.url, b.url, c.url]);
    expect(made[0]?.pool.closed).toBe(true);
    expect(made[1]?.pool.closed).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

describe('accounting', () => {
  it('keeps a request in flight until its body is read', async () => {
    const hold = streamAndHold('first\n');
    const [s] = (await startServers(1, hold)) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    const res = await request('http://fairpick/slow', { dispatcher: d });
    expect(res.statusCode).toBe(200);
    const reader = res.body[Symbol.asyncIterator]();
    expect(String((await reader.next()).value)).toBe('first\n');
    expect(stat(lb, 's0').inFlight).toBe(1);
    await waitFor(() => hold.held === 1);
    expect(stat(lb, 's0').inFlight).toBe(1);
    hold.release('rest\n');
    let rest = '';
    for (let r = await reader.next(); r.done !== true; r = await reader.next()) rest += String(r.value);
    expect(rest).toBe('rest\n');
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 0, successes: 1, failures: 0 });
  });

  it('releases a request whose body the caller destroys, as the response it was', async () => {
    const hold = streamAndHold();
    const [s] = (await startServers(1, hold)) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    const res = await request('http://fairpick/slow', { dispatcher: d });
    expect(stat(lb, 's0').inFlight).toBe(1);
    res.body.destroy();
    await waitFor(() => stat(lb, 's0').inFlight === 0, { message: 'the slot released' });
    // A 200 whose body the caller dropped is no failure of the backend (as balancedFetch's cancel).
    expect(stat(lb, 's0')).toMatchObject({ successes: 1, failures: 0 });
    // undici aborts the request by closing its connection (and may open a fresh idle one).
    await waitFor(() => s.closedSockets >= 1, { message: 'the server socket closed' });
  });

  it('releases a request the caller aborts through its signal, without blaming the backend', async () => {
    const hold = streamAndHold();
    const [s] = (await startServers(1, hold)) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    const controller = new AbortController();
    const res = await request('http://fairpick/slow', { dispatcher: d, signal: controller.signal });
    expect(stat(lb, 's0').inFlight).toBe(1);
    controller.abort();
    await expect(res.body.text()).rejects.toThrow();
    await waitFor(() => stat(lb, 's0').inFlight === 0);
    expect(stat(lb, 's0').failures).toBe(0);

    // Aborted before the response headers: the request rejects, nothing is counted as failed.
    const h = new AbortController();
    s.handler = hang;
    const pending = request('http://fairpick/hang', { dispatcher: d, signal: h.signal });
    await waitFor(() => s.hits === 2);
    h.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await waitFor(() => stat(lb, 's0').inFlight === 0);
    expect(stat(lb, 's0').failures).toBe(0);
  });

  it('counts a 500 as a failure and a 404 as a success', async () => {
    const [s] = (await startServers(1, respond(500))) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb, { retries: 0 });
    expect((await get(d, '/a')).status).toBe(500);
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, successes: 0, inFlight: 0 });
    s.handler = respond(404);
    expect((await get(d, '/b')).status).toBe(404);
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, successes: 1, inFlight: 0 });
  });

  it('releases a HEAD and a 204, which have no body', async () => {
    const [s] = (await startServers(1, respond(204, ''))) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    expect((await get(d, '/no-content')).status).toBe(204);
    s.handler = respond(200);
    const head = await request('http://fairpick/h', { dispatcher: d, method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(await head.body.text()).toBe('');
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 0, successes: 2 });
  });

  it('uses failureStatuses when given', async () => {
    const [s] = (await startServers(1, respond(429))) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb, { failureStatuses: [429] });
    expect((await get(d)).status).toBe(429);
    s.handler = respond(500);
    expect((await get(d)).status).toBe(500);
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, successes: 1 });
  });
});

// ---------------------------------------------------------------------------------------------
// Retries and timeouts
// ---------------------------------------------------------------------------------------------

describe('retries', () => {
  it('loses no GET when a backend stops mid-run', async () => {
    const servers = await startServers(3);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    const statuses: number[] = [];
    for (let i = 0; i < 60; i++) {
      if (i === 20) await servers[1]?.stop();
      statuses.push((await get(d, `/r/${i}`)).status);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(stat(lb, 's1').failures).toBeGreaterThanOrEqual(10); // picked every third time, retried each time
    expect(inFlight(lb)).toBe(0);
  });

  it('with passive health, ejects the stopped backend after 3 failures', async () => {
    const servers = await startServers(3);
    const lb = balancer(servers, { health: { passive: { consecutiveFailures: 3 } } });
    const d = dispatcher(lb);
    let failed = 0;
    for (let i = 0; i < 60; i++) {
      if (i === 20) await servers[1]?.stop();
      if ((await get(d, `/r/${i}`)).status !== 200) failed++;
    }
    expect(failed).toBe(0);
    expect(stat(lb, 's1')).toMatchObject({ state: 'ejected', failures: 3, ejections: 1 });
    expect(servers[0]?.hits).toBeGreaterThan(20);
    expect(servers[2]?.hits).toBeGreaterThan(20);
  });

  it('retries a 503 on another backend; the 503 never reaches the caller', async () => {
    const servers = await startServers(3);
    const [bad] = servers as [TestServer];
    bad.handler = respond(503, 'SECRET-503-BODY');
    const lb = balancer(servers);
    const d = dispatcher(lb);
    for (let i = 0; i < 9; i++) {
      const res = await request('http://fairpick/x', { dispatcher: d });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-server']).not.toBe('s0');
      const text = await res.body.text();
      expect(text).not.toContain('SECRET');
    }
    expect(bad.hits).toBeGreaterThanOrEqual(3);
    expect(stat(lb, 's0')).toMatchObject({ failures: bad.hits, successes: 0, inFlight: 0 });
    expect(inFlight(lb)).toBe(0);
  });

  it('hands over the 503 body to a stream and a fetch only from the last attempt', async () => {
    const servers = await startServers(2);
    const [bad] = servers as [TestServer];
    bad.handler = respond(503, 'SECRET-503-BODY');
    const lb = balancer(servers);
    const d = dispatcher(lb);
    for (let i = 0; i < 4; i++) {
      const out = collector();
      const data = await stream(
        'http://fairpick/s',
        { dispatcher: d, method: 'GET', opaque: null },
        ({ statusCode }) => {
          expect(statusCode).toBe(200);
          return out.sink;
        },
      );
      expect(data).toMatchObject({ opaque: null });
      expect(out.text()).not.toContain('SECRET');
      const res = await undiciFetch('http://fairpick/f', { dispatcher: d });
      expect(res.status).toBe(200);
      expect(await res.text()).not.toContain('SECRET');
    }
    expect(bad.hits).toBeGreaterThanOrEqual(4);
  });

  it('gives the caller the last 503 when every backend answers 503', async () => {
    const servers = await startServers(3, respond(503));
    const lb = balancer(servers);
    const d = dispatcher(lb, { retries: 2 });
    const res = await get(d, '/all-bad');
    expect(res.status).toBe(503);
    expect(servers.map((s) => s.hits)).toEqual([1, 1, 1]);
    expect(res.text).toBe(`${res.server} 503`);
    expect(servers.map((s) => s.name).indexOf(res.server ?? '')).toBeGreaterThanOrEqual(0);
    expect(inFlight(lb)).toBe(0);
    expect(lb.stats().map((s) => s.failures)).toEqual([1, 1, 1]);
  });

  it('does not retry a POST by default; does with retryNonIdempotent', async () => {
    const servers = await startServers(2);
    const [bad, good] = servers as [TestServer, TestServer];
    bad.handler = respond(503);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    const post = () => request('http://fairpick/orders', { dispatcher: d, method: 'POST', body: '{"n":1}' });
    const first = await post(); // round-robin: s0 first
    expect(first.statusCode).toBe(503);
    await first.body.text();
    expect(good.hits).toBe(0);
    expect(bad.hits).toBe(1);
    await (await post()).body.text(); // s1, to realign the round

    const lb2 = balancer(servers);
    const d2 = dispatcher(lb2, { retryNonIdempotent: true });
    const res = await request('http://fairpick/orders', { dispatcher: d2, method: 'POST', body: '{"n":2}' });
    expect(res.statusCode).toBe(200);
    const e = (await res.body.json()) as EchoBody;
    expect(e).toMatchObject({ server: 's1', method: 'POST', body: '{"n":2}' });
    expect(bad.hits).toBe(2);
  });

  it('does not retry a POST on a stopped backend by default', async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    await servers[0]?.stop();
    await expect(request('http://fairpick/p', { dispatcher: d, method: 'POST', body: 'x' })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
    expect(servers[1]?.hits).toBe(0);
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, inFlight: 0 });
  });

  it('never retries a stream body, even an idempotent PUT with retryNonIdempotent', async () => {
    const servers = await startServers(2);
    const [bad, good] = servers as [TestServer, TestServer];
    bad.handler = respond(503);
    const lb = balancer(servers);
    const d = dispatcher(lb, { retryNonIdempotent: true });
    const res = await request('http://fairpick/put', {
      dispatcher: d,
      method: 'PUT',
      body: Readable.from([Buffer.from('a'), Buffer.from('b')]),
    });
    expect(res.statusCode).toBe(503);
    await res.body.text();
    expect(good.hits).toBe(0);
    // A Buffer body can be sent again: retried.
    await echoOf(d); // s1, to realign the round
    const buf = await request('http://fairpick/put', { dispatcher: d, method: 'PUT', body: Buffer.from('ab') });
    expect(buf.statusCode).toBe(200);
    expect(((await buf.body.json()) as EchoBody).body).toBe('ab');
  });

  it('times out a backend that never answers: retried elsewhere, its socket closed', async () => {
    const servers = await startServers(2);
    const [slow] = servers as [TestServer];
    slow.handler = hang;
    const lb = balancer(servers);
    const d = dispatcher(lb, { timeoutMs: 1000 }); // not shorter: s1 must always beat it
    const res = await get(d, '/t');
    expect(res).toMatchObject({ status: 200, server: 's1' });
    expect(slow.hits).toBe(1);
    await waitFor(() => slow.closedSockets >= 1, { message: 'the hung socket closed' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, inFlight: 0 });
  });

  it('gives ERR_TIMEOUT to onError when no other backend can take the retry', async () => {
    const [slow] = (await startServers(1, hang)) as [TestServer];
    const lb = balancer([slow]);
    const d = dispatcher(lb, { timeoutMs: 150 });
    const { handler, seen, done } = legacyHandler();
    d.dispatch({ origin: 'http://fairpick', path: '/t', method: 'GET' }, handler);
    await within(done, 'onError');
    expect(isFairpickError(seen.error, 'ERR_TIMEOUT')).toBe(true);
    expect(seen.error?.message).toMatch(/"s0" within 150 ms/);
    await expect(request('http://fairpick/t', { dispatcher: d })).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    await waitFor(() => slow.hits === 2 && slow.closedSockets >= 2, { message: 'the hung sockets closed' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 2, inFlight: 0 });
  });

  it('times out an attempt still waiting for a connection of its pool (connections: 1)', async () => {
    const hold = streamAndHold();
    const servers = await startServers(2);
    const [busy] = servers as [TestServer, TestServer];
    busy.handler = hold;
    const lb = balancer(servers);
    const d = dispatcher(lb, { connections: 1, timeoutMs: 1000 }); // not shorter: s1 must always beat it
    const first = await request('http://fairpick/1', { dispatcher: d }); // s0: headers, body held
    expect(first.headers['x-server']).toBe('s0');
    expect((await get(d, '/2')).server).toBe('s1');
    // s0's only connection is busy: the third request waits in s0's pool, times out, goes to s1.
    const third = await within(get(d, '/3'), 'the queued request');
    expect(third).toMatchObject({ status: 200, server: 's1' });
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 1, failures: 1 });
    hold.release();
    expect(await first.body.text()).toBe('first chunk\nrest\n');
    await waitFor(() => inFlight(lb) === 0);
    expect(busy.hits).toBe(1); // the abandoned attempt never reached the server
  });

  it('times out a connect that never completes', async () => {
    const servers = await startServers(2);
    const [s0, s1] = servers as [TestServer, TestServer];
    const lb = balancer(servers);
    const stuck: Array<(err: Error | null) => void> = [];
    const d = dispatcher(lb, {
      timeoutMs: 1000, // not shorter: s1 must always beat it
      // s0 behaves as a black-holed address: its connector never calls back.
      factory: (origin, options) =>
        new Pool(
          origin,
          origin === s0.url
            ? {
                ...options,
                connect: (_opts, callback) => {
                  stuck.push((err) => callback(err ?? new Error('never'), null));
                },
              }
            : options,
        ),
    });
    expect(await within(get(d, '/c'), 'the black-holed request')).toMatchObject({ status: 200, server: 's1' });
    expect(stat(lb, 's0')).toMatchObject({ failures: 1, inFlight: 0 });
    lb.markDown('s1');
    await expect(within(request('http://fairpick/c', { dispatcher: d }), 'ERR_TIMEOUT')).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
    });
    expect(stuck.length).toBeGreaterThanOrEqual(1);
    expect(s0.hits + s1.hits).toBe(1);
    for (const fail of stuck) fail(null); // let s0's pool close
  });

  it('rejects with ERR_NO_BACKEND (a FairpickError) on an empty pool or all backends down', async () => {
    const empty = track(createBalancer<Backend>({ algorithm: 'round-robin', backends: [] }));
    const d = dispatcher(empty);
    const err = await request('http://fairpick/x', { dispatcher: d }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FairpickError);
    expect(isFairpickError(err, 'ERR_NO_BACKEND')).toBe(true);

    const servers = await startServers(2);
    const lb = balancer(servers);
    const d2 = dispatcher(lb);
    lb.markDown('s0');
    lb.markDown('s1');
    await expect(request('http://fairpick/x', { dispatcher: d2 })).rejects.toMatchObject({ code: 'ERR_NO_BACKEND' });
    await expect(undiciFetch('http://fairpick/x', { dispatcher: d2 })).rejects.toMatchObject({
      cause: { code: 'ERR_NO_BACKEND' },
    });
    const { handler, seen, done } = modernHandler();
    d2.dispatch({ origin: 'http://fairpick', path: '/', method: 'GET' }, handler);
    await done;
    expect(isFairpickError(seen.error, 'ERR_NO_BACKEND')).toBe(true);
    expect(servers.map((s) => s.hits)).toEqual([0, 0]);
    expect(inFlight(lb)).toBe(0);
  });

  it('stops retrying at the retry budget when every backend fails (injected clock)', async () => {
    const servers = await startServers(3, respond(503));
    const lb = balancer(servers);
    let t = 1_000;
    // 3 retries per 1 s window at the floor, no share of the requests.
    const d = dispatcher(lb, {
      retries: 2,
      now: () => t,
      retryBudget: { percent: 0, minPerSecond: 3, windowMs: 1000 },
    });
    const hits = () => servers.reduce((n, s) => n + s.hits, 0);
    const attempts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = hits();
      expect((await get(d, `/b/${i}`)).status).toBe(503);
      attempts.push(hits() - before);
    }
    expect(attempts).toEqual([3, 2, 1, 1, 1]);
    t += 1_000; // a new window: the budget is back
    const before = hits();
    expect((await get(d, '/b/again')).status).toBe(503);
    expect(hits() - before).toBe(3);
    expect(inFlight(lb)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// undici issue 4839
// ---------------------------------------------------------------------------------------------

// https://github.com/nodejs/undici/issues/4839: after both upstreams of a BalancedPool failed for a
// while, both weights sit at the same low value and its pick keeps returning the same upstream. Run
// with undici 7.30.2 on this machine (2 upstreams, `connections: 1`, 30 requests while both were
// stopped, then one restarted, 40 sequential requests):
//
//   only the first upstream back:  first 0 requests, second 0, errors 40/40
//   only the second upstream back: first 0, second 20, errors 20/40
//
// so with one of two upstreams up, BalancedPool kept sending to the dead one. Below, the same outage
// through BalancedDispatcher: the dead backend is retried around and ejected, and traffic spreads
// over both again once both are back.
describe('undici issue 4839: recovery after both upstreams failed', () => {
  it('serves every request once one is back, and spreads over both once both are back', async () => {
    const [a, b] = (await startServers(2)) as [TestServer, TestServer]; // ids s0 and s1
    const lb = balancer([a, b], {
      health: { passive: { consecutiveFailures: 2, baseEjectionMs: 100, maxEjectionMs: 200 } },
    });
    const d = dispatcher(lb);
    for (let i = 0; i < 4; i++) await echoOf(d);
    await Promise.all([a.stop(), b.stop()]);
    let errors = 0;
    for (let i = 0; i < 30; i++) await get(d, '/down').catch(() => errors++);
    expect(errors).toBe(30);
    expect(inFlight(lb)).toBe(0);

    await a.start(); // one back: once its own ejection (if any) ended, every request is served by it
    await waitFor(() => stat(lb, 's0').state === 'healthy', { message: 's0 back in rotation' });
    const aHits = a.hits;
    for (let i = 0; i < 40; i++) expect((await get(d, '/half')).status).toBe(200);
    expect(a.hits - aHits).toBe(40);
    expect(stat(lb, 's1').ejections).toBeGreaterThanOrEqual(1);

    await b.start(); // both back: poll until a batch spreads over both
    await waitFor(
      async () => {
        const before = [a.hits, b.hits];
        for (let i = 0; i < 10; i++) expect((await get(d, '/both')).status).toBe(200);
        return a.hits - (before[0] ?? 0) >= 4 && b.hits - (before[1] ?? 0) >= 4;
      },
      { message: 'traffic over both backends again' },
    );
    expect(lb.stats().map((s) => s.state)).toEqual(['healthy', 'healthy']);
  });
});

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

describe('close and destroy', () => {
  it('close() waits for requests in flight, then refuses new ones', async () => {
    const hold = streamAndHold();
    const [s] = (await startServers(1, hold)) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    const res = await request('http://fairpick/slow', { dispatcher: d });
    let closed = false;
    const closing = d.close().then(() => {
      closed = true;
    });
    expect(d.closed).toBe(true);
    expect(d.destroyed).toBe(false);
    await expect(request('http://fairpick/new', { dispatcher: d })).rejects.toBeInstanceOf(errors.ClientClosedError);
    await waitFor(() => hold.held === 1);
    await sleep(50);
    expect(closed).toBe(false);
    hold.release();
    expect(await res.body.text()).toBe('first chunk\nrest\n');
    await within(closing, 'close()');
    expect(closed).toBe(true);
    expect(s.hits).toBe(1);
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 0, successes: 1 });
    await waitFor(() => s.sockets.size === 0, { message: 'the pool closed its socket' });
  });

  it('close(callback) and destroy(callback) call back', async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    await echoOf(d);
    await within(new Promise<void>((resolve) => d.close(resolve)), 'close callback');
    expect(d.closed).toBe(true);
    const d2 = dispatcher(lb);
    await echoOf(d2);
    await within(new Promise<void>((resolve) => d2.destroy(resolve)), 'destroy callback');
    await within(new Promise<void>((resolve) => d2.destroy(null, resolve)), 'destroy(null, callback)');
    expect(d2.destroyed).toBe(true);
    expect(d2.closed).toBe(true);
    await expect(request('http://fairpick/', { dispatcher: d2 })).rejects.toBeInstanceOf(errors.ClientDestroyedError);
  });

  it('destroy() aborts requests in flight, without blaming the backend', async () => {
    const hold = streamAndHold();
    const [s] = (await startServers(1, hold)) as [TestServer];
    const lb = balancer([s]);
    const d = dispatcher(lb);
    const res = await request('http://fairpick/slow', { dispatcher: d });
    const reading = res.body.text();
    await d.destroy();
    await expect(reading).rejects.toBeInstanceOf(errors.ClientDestroyedError);
    expect(stat(lb, 's0')).toMatchObject({ inFlight: 0, failures: 0 });
    await waitFor(() => s.sockets.size === 0);
  });

  it('destroy() fails a retriable request waiting for headers: no retry on a new pool', async () => {
    const servers = await startServers(2);
    const [slow, fine] = servers as [TestServer, TestServer];
    slow.handler = hang;
    const lb = balancer(servers);
    const { made, factory } = poolFactory();
    const d = dispatcher(lb, { factory });
    const pending = request('http://fairpick/h', { dispatcher: d }).then(
      () => 'answered',
      (e: unknown) => e,
    );
    await waitFor(() => slow.hits === 1);
    await d.destroy();
    expect(await within(pending, 'the request')).toBeInstanceOf(errors.ClientDestroyedError);
    expect(fine.hits).toBe(0);
    expect(made.map((m) => m.origin)).toEqual([slow.url]);
    expect(made.every((m) => m.pool.destroyed)).toBe(true);
    expect(lb.stats().map((x) => [x.inFlight, x.failures])).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });

  it('close() lets a request in flight retry, then closes every pool, the new ones too', async () => {
    const servers = await startServers(2);
    const [bad, good] = servers as [TestServer, TestServer];
    const gate = held();
    bad.handler = gate;
    const lb = balancer(servers);
    const { made, factory } = poolFactory();
    const d = dispatcher(lb, { factory });
    const pending = request('http://fairpick/r', { dispatcher: d });
    await waitFor(() => gate.waiting === 1);
    const closing = d.close();
    gate.answer(503); // retried on s1, whose pool does not exist yet
    const res = await within(pending, 'the retried request');
    expect(res.statusCode).toBe(200);
    expect(((await res.body.json()) as EchoBody).server).toBe('s1');
    await within(closing, 'close()');
    expect(made.map((m) => m.origin)).toEqual([bad.url, good.url]);
    for (const m of made) expect(m.pool.closed).toBe(true);
    await waitFor(() => bad.sockets.size === 0 && good.sockets.size === 0, { message: 'every socket closed' });
  });
});

describe('dispatch handlers', () => {
  it('drives a handler in the newer form (onRequestStart … onResponseEnd)', async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    for (const expected of ['s0', 's1']) {
      const { handler, seen, done } = modernHandler();
      d.dispatch({ origin: 'http://fairpick', path: '/m?x=1', method: 'GET' }, handler);
      await within(done, 'onResponseEnd');
      expect(seen).toMatchObject({ started: 1, status: 200, ended: true, error: null });
      expect(seen.headers['x-server']).toBe(expected);
      expect((JSON.parse(seen.body) as EchoBody).url).toBe('/m?x=1');
    }
    expect(inFlight(lb)).toBe(0);
  });

  it('a newer-form handler can pause and resume the response', async () => {
    const servers = await startServers(1);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    let paused: Dispatcher.DispatchController | null = null;
    const { handler, seen, done } = modernHandler();
    const onResponseStart = handler.onResponseStart?.bind(handler);
    handler.onResponseStart = (controller, statusCode, headers, message) => {
      onResponseStart?.(controller, statusCode, headers, message);
      controller.pause();
      paused = controller;
    };
    d.dispatch({ origin: 'http://fairpick', path: '/pause', method: 'GET' }, handler);
    await waitFor(() => paused !== null);
    expect(stat(lb, 's0').inFlight).toBe(1);
    expect(seen.ended).toBe(false);
    (paused as unknown as Dispatcher.DispatchController).resume();
    await within(done, 'the resumed response');
    expect(seen).toMatchObject({ status: 200, ended: true, error: null });
    expect((JSON.parse(seen.body) as EchoBody).url).toBe('/pause');
    expect(stat(lb, 's0').inFlight).toBe(0);
  });

  it('a newer-form handler sees one onRequestStart across a retry, and can abort', async () => {
    const servers = await startServers(2);
    (servers[0] as TestServer).handler = respond(503);
    const lb = balancer(servers);
    const d = dispatcher(lb);
    const { handler, seen, done } = modernHandler();
    d.dispatch({ origin: 'http://fairpick', path: '/', method: 'GET' }, handler);
    await within(done, 'the retried request');
    expect(seen).toMatchObject({ started: 1, status: 200, ended: true });
    expect(seen.headers['x-server']).toBe('s1');

    const aborting = modernHandler((controller) => controller.abort(new Error('caller gave up')));
    d.dispatch({ origin: 'http://fairpick', path: '/', method: 'GET' }, aborting.handler);
    await within(aborting.done, 'the aborted request');
    expect(aborting.seen.error?.message).toBe('caller gave up');
    expect(aborting.seen.status).toBe(0);
    await waitFor(() => inFlight(lb) === 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Global dispatcher
// ---------------------------------------------------------------------------------------------

describe('as the global dispatcher', () => {
  function install(d: Dispatcher): void {
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(d);
    defer(() => setGlobalDispatcher(previous));
  }

  it("balances undici's fetch and request without a dispatcher option", async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    install(dispatcher(lb));
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await undiciFetch(`http://fairpick/g/${i}`);
      seen.push(((await res.json()) as EchoBody).server);
    }
    const res = await request('http://fairpick/r');
    seen.push(((await res.body.json()) as EchoBody).server);
    expect(seen).toEqual(['s0', 's1', 's0', 's1', 's0']);
  });

  it("balances Node's own global fetch (Node's bundled undici) too", async () => {
    const servers = await startServers(2);
    const lb = balancer(servers);
    install(dispatcher(lb));
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await globalThis.fetch(`http://fairpick/n/${i}?v=${process.versions.undici}`);
      expect(res.status).toBe(200);
      const e = (await res.json()) as EchoBody;
      expect(e.url).toBe(`/n/${i}?v=${process.versions.undici}`);
      seen.push(e.server);
    }
    expect(seen).toEqual(['s0', 's1', 's0', 's1']);
    const post = await globalThis.fetch('http://fairpick/post', { method: 'POST', body: 'hi' });
    expect(((await post.json()) as EchoBody).body).toBe('hi');
    for (const s of servers) s.handler = respond(503);
    const bad = await globalThis.fetch('http://fairpick/bad');
    expect(bad.status).toBe(503);
    await bad.text();
    expect(inFlight(lb)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

describe('validation', () => {
  const lb = () =>
    createBalancer<Backend>({ algorithm: 'round-robin', backends: [{ id: 'a', url: 'http://127.0.0.1:1' }] });

  // [the field that the message starts with, the options]
  const cases: ReadonlyArray<readonly [string, unknown]> = [
    ['options', 'fast'],
    ['options.retries', { retries: -1 }],
    ['options.retries', { retries: 1.5 }],
    ['options.retryOn[1]', { retryOn: [503, 'x'] }],
    ['options.retryOn', { retryOn: 503 }],
    ['options.retryNonIdempotent', { retryNonIdempotent: 'yes' }],
    ['options.retryBudget.percent', { retryBudget: { percent: 101 } }],
    ['options.retryBudget.windowMs', { retryBudget: { windowMs: 10 } }],
    ['options.retryBudget.ratio', { retryBudget: { ratio: 1 } }],
    ['options.failureStatuses[0]', { failureStatuses: [700] }],
    ['options.timeoutMs', { timeoutMs: 0 }],
    ['options.timeoutMs', { timeoutMs: Number.POSITIVE_INFINITY }],
    ['options.origin', { origin: 'http://fairpick/path' }],
    ['options.origin', { origin: 'ftp://fairpick' }],
    ['options.factory', { factory: 'pool' }],
    ['options.passthrough', { passthrough: {} }],
    ['options.key', { key: 'x-user' }],
    ['options.clientIp', { clientIp: 1 }],
    ['options.now', { now: 1234 }],
    ['options.connections', { connections: -1 }],
    ['options.keepAliveTimeout', { keepAliveTimeout: -5 }],
  ];

  it.each(cases)('names %s in ERR_INVALID_ARGUMENT for %o', (field, options) => {
    let thrown: unknown;
    try {
      new BalancedDispatcher(lb(), options as BalancedDispatcherOptions);
    } catch (error) {
      thrown = error;
    }
    expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((thrown as Error).message.startsWith(`${field} `)).toBe(true);
  });

  it('rejects a bad balancer or a backend without a usable url, naming it', () => {
    expect(() => new BalancedDispatcher({} as Balancer<Backend>)).toThrow(/^lb must be/);
    for (const url of ['127.0.0.1:8080', 'ftp://h', 'http://h/?q=1', 'http://u:p@h']) {
      const bad = createBalancer<Backend>({ algorithm: 'round-robin', backends: [{ id: 'bad', url }] });
      let thrown: unknown;
      try {
        new BalancedDispatcher(bad);
      } catch (error) {
        thrown = error;
      }
      expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
      expect((thrown as Error).message).toMatch(/^backend "bad" url /);
    }
  });

  it('fails the request, not the process, for a backend added later with a bad url', async () => {
    const servers = await startServers(1);
    const lb2 = balancer(servers);
    const d = dispatcher(lb2);
    lb2.remove('s0');
    lb2.add({ id: 'late', url: 'not a url' });
    await expect(request('http://fairpick/', { dispatcher: d })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    expect(inFlight(lb2)).toBe(0);
  });
});
