/**
 * balancedFetch against real node:http servers on 127.0.0.1 (GitHub issue 6): routing, spread,
 * in-flight accounting, retries, errors, timeouts and aborts, the retry budget, recovery after a
 * total outage (undici issue 4839), validation and the injected fetch.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type BalancedFetchOptions, balancedFetch, UpstreamError } from '../../src/fetch/index.js';
import { type Balancer, type FairpickError, isFairpickError } from '../../src/index.js';
import {
  backendsOf,
  balancer,
  closeAll,
  type EchoBody,
  echo,
  hang,
  inFlight,
  respond,
  startServer,
  startServers,
  stat,
  streamAndHold,
  type TestServer,
  type Web,
  waitFor,
} from './support.js';

afterEach(closeAll);

const hits = (servers: readonly TestServer[]): number[] => servers.map((s) => s.hits);
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** The rejection of `promise` (failing if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, got a response');
}

async function upstreamError(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(UpstreamError);
  expect(isFairpickError(error, 'ERR_UPSTREAM')).toBe(true);
  return error as UpstreamError;
}

/** GET and read: the status and the server that answered (x-server). */
async function get(f: typeof fetch, path: string, init?: RequestInit): Promise<{ status: number; server: string }> {
  const res = await f(path, init);
  await res.arrayBuffer();
  return { status: res.status, server: res.headers.get('x-server') ?? '' };
}

describe('routing', () => {
  it('sends relative and placeholder URLs to the picked backend url + path + query', async () => {
    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);

    const r1 = await f('/api/x?q=1');
    expect(r1.status).toBe(200);
    const e1 = (await r1.json()) as EchoBody;
    expect(e1.url).toBe('/api/x?q=1');
    expect(e1.host).toBe(`127.0.0.1:${s.port}`);
    expect(r1.url).toBe(`${s.url}/api/x?q=1`);

    const e2 = (await (await f('http://fairpick/api/x')).json()) as EchoBody;
    expect(e2.url).toBe('/api/x');
    const e3 = (await (await f(new URL('http://fairpick/api/y?z=2&z=3'))).json()) as EchoBody;
    expect(e3.url).toBe('/api/y?z=2&z=3');

    expect(s.hits).toBe(3);
    expect(stat(lb, 'a')).toMatchObject({ picks: 3, successes: 3, failures: 0, inFlight: 0 });
  });

  it('prefixes a backend base path (with or without a trailing slash)', async () => {
    const [a, b] = await startServers(2);
    if (a === undefined || b === undefined) throw new Error('servers');
    const lb = balancer({
      backends: [
        { id: 'a', url: `${a.url}/base` },
        { id: 'b', url: `${b.url}/v1/` },
      ],
    });
    const f = balancedFetch(lb);
    const urls: string[] = [];
    for (let i = 0; i < 4; i++) urls.push(((await (await f('/api/x?q=1')).json()) as EchoBody).url);
    expect(urls.sort()).toEqual(['/base/api/x?q=1', '/base/api/x?q=1', '/v1/api/x?q=1', '/v1/api/x?q=1']);
    expect(a.requests.map((r) => r.url)).toEqual(['/base/api/x?q=1', '/base/api/x?q=1']);
  });

  it('passes an absolute URL on another origin through untouched, outside the stats', async () => {
    const [pooled, other] = await startServers(2);
    if (pooled === undefined || other === undefined) throw new Error('servers');
    const lb = balancer({ backends: [{ id: 'pooled', url: pooled.url }] });
    const f = balancedFetch(lb);
    const res = await f(`${other.url}/elsewhere?x=1`, { method: 'POST', body: 'payload' });
    const body = (await res.json()) as EchoBody;
    expect(body).toMatchObject({ server: 's1', method: 'POST', url: '/elsewhere?x=1', body: 'payload' });
    expect(pooled.hits).toBe(0);
    expect(other.hits).toBe(1);
    expect(stat(lb, 'pooled')).toMatchObject({ picks: 0, successes: 0, failures: 0, inFlight: 0 });
  });

  it('takes a Request object: method, headers and body', async () => {
    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const request = new Request('http://fairpick/api/r?k=v', {
      method: 'PUT',
      headers: { 'x-test': 'yes', 'content-type': 'text/plain' },
      body: 'hello body',
    });
    const res = await f(request);
    const body = (await res.json()) as EchoBody;
    expect(body).toMatchObject({ method: 'PUT', url: '/api/r?k=v', body: 'hello body' });
    expect(body.headers['x-test']).toBe('yes');
    expect(body.headers['content-type']).toBe('text/plain');
    // init overrides the Request's fields, as fetch does
    const res2 = await f(new Request('http://fairpick/two', { headers: { 'x-test': 'request' } }), {
      headers: { 'x-test': 'init' },
    });
    expect(((await res2.json()) as EchoBody).headers['x-test']).toBe('init');
    expect(stat(lb, 'a')).toMatchObject({ picks: 2, inFlight: 0 });
  });

  it('balances a custom origin and passes the default placeholder through', async () => {
    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const passedThrough: string[] = [];
    const f = balancedFetch(lb, {
      origin: 'http://pool.internal:8080',
      fetch: (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        if (!url.startsWith('http://127.0.0.1:')) {
          // never leave loopback: answer the pass-through here
          passedThrough.push(url);
          return Promise.resolve(new Response('stub'));
        }
        return globalThis.fetch(input, init);
      },
    });
    const e1 = (await (await f('http://POOL.internal:8080/p?x=1')).json()) as EchoBody;
    expect(e1.url).toBe('/p?x=1');
    const e2 = (await (await f('/rel')).json()) as EchoBody;
    expect(e2.url).toBe('/rel');
    expect(await (await f('http://fairpick/not-pooled')).text()).toBe('stub');
    expect(await (await f('http://pool.internal/other-port')).text()).toBe('stub');
    expect(passedThrough).toEqual(['http://fairpick/not-pooled', 'http://pool.internal/other-port']);
    expect(stat(lb, 'a').picks).toBe(2);
  });
});

describe('spread', () => {
  it('round-robin over 3 backends is exactly even over 30 requests', async () => {
    const servers = await startServers(3);
    const lb = balancer({ algorithm: 'round-robin', backends: backendsOf(servers) });
    const f = balancedFetch(lb);
    for (let i = 0; i < 30; i++) expect((await get(f, `/rr/${i}`)).status).toBe(200);
    expect(hits(servers)).toEqual([10, 10, 10]);
    expect(lb.stats().map((s) => [s.picks, s.successes, s.inFlight])).toEqual([
      [10, 10, 0],
      [10, 10, 0],
      [10, 10, 0],
    ]);
  });

  it('weights 3:1 give exactly 30:10 over 40 requests (round-robin)', async () => {
    const [heavy, light] = await startServers(2);
    if (heavy === undefined || light === undefined) throw new Error('servers');
    const lb = balancer({
      backends: [
        { id: 'heavy', url: heavy.url, weight: 3 },
        { id: 'light', url: light.url, weight: 1 },
      ],
    });
    const f = balancedFetch(lb);
    for (let i = 0; i < 40; i++) await get(f, '/w');
    expect([heavy.hits, light.hits]).toEqual([30, 10]);
  });

  it('least-connections sees responses in flight and sends new requests elsewhere', async () => {
    const [a, b] = await startServers(2);
    if (a === undefined || b === undefined) throw new Error('servers');
    a.handler = hang;
    const lb = balancer({ algorithm: 'least-connections', backends: backendsOf([a, b]) });
    const f = balancedFetch(lb);
    // Hold two requests open on a: keep b out while they are sent.
    lb.markDown('s1');
    const held = new AbortController();
    const pending = [f('/slow/1', { signal: held.signal }), f('/slow/2', { signal: held.signal })];
    const settled = pending.map((p) =>
      p.then(
        () => 'resolved',
        () => 'rejected',
      ),
    );
    await waitFor(() => a.hits === 2, { message: 'a received both slow requests' });
    lb.markUp('s1');
    expect(stat(lb, 's0').inFlight).toBe(2);

    for (let i = 0; i < 6; i++) {
      const r = await get(f, `/fast/${i}`);
      expect(r).toEqual({ status: 200, server: 's1' });
    }
    expect(hits([a, b])).toEqual([2, 6]);
    expect(stat(lb, 's0').inFlight).toBe(2);
    expect(stat(lb, 's1').inFlight).toBe(0);

    held.abort();
    expect(await Promise.all(settled)).toEqual(['rejected', 'rejected']);
    expect(inFlight(lb)).toBe(0);
    expect(stat(lb, 's0').failures).toBe(0); // the caller aborted: not the backend's fault
  });
});

describe('in-flight accounting and outcomes', () => {
  it('counts a streamed response in flight until its body is read to the end', async () => {
    const stream = streamAndHold('chunk-1\n');
    const s = await startServer('a', stream);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const res = await f('/stream');
    expect(res.status).toBe(200);
    expect(stat(lb, 'a').inFlight).toBe(1);
    const text = res.text();
    await waitFor(() => stream.held === 1, { message: 'the response is held open' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    stream.release('chunk-2\n');
    expect(await text).toBe('chunk-1\nchunk-2\n');
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, successes: 1, failures: 0 });
  });

  it('counts the request out when the body is cancelled', async () => {
    const stream = streamAndHold();
    const s = await startServer('a', stream);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const res = await f('/stream');
    const reader = res.body?.getReader();
    expect(new TextDecoder().decode((await reader?.read())?.value)).toBe('first chunk\n');
    expect(stat(lb, 'a').inFlight).toBe(1);
    await reader?.cancel();
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, successes: 1 });
    // `res.body.cancel()` without a reader too
    const res2 = await f('/stream');
    expect(stat(lb, 'a').inFlight).toBe(1);
    await res2.body?.cancel();
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, successes: 2, failures: 0 });
    await waitFor(() => s.requestClosed(0) && s.requestClosed(1), { message: 'the server sees both streams closed' });
  });

  it('counts the request out when the caller aborts while reading the body', async () => {
    const stream = streamAndHold();
    const s = await startServer('a', stream);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const controller = new AbortController();
    const res = await f('/stream', { signal: controller.signal });
    const reader = res.body?.getReader();
    await reader?.read();
    const next = reader?.read();
    controller.abort();
    expect(await rejection(Promise.resolve(next))).toBe(controller.signal.reason);
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, failures: 0 });
    await waitFor(() => s.requestClosed(0), { message: 'the server sees the stream closed' });
  });

  it('counts the request out when the caller aborts mid-body and drops the response', async () => {
    const stream = streamAndHold();
    const s = await startServer('a', stream);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const controller = new AbortController();
    const res = await f('/stream', { signal: controller.signal });
    await waitFor(() => stream.held === 1, { message: 'the body is held open' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    controller.abort();
    await waitFor(() => stat(lb, 'a').inFlight === 0, { message: 'the aborted request is counted out' });
    expect(stat(lb, 'a').failures).toBe(0);
    await waitFor(() => s.requestClosed(0), { message: 'the server sees the stream closed' });
    // reading it afterwards fails with an AbortError, as an aborted fetch body does
    expect(await rejection(res.text())).toMatchObject({ name: 'AbortError' });
  });

  it('counts a response without a body (HEAD, 204) out at once', async () => {
    const s = await startServer('a', (req, res, server) =>
      req.url === '/empty' ? respond(204, '')(req, res, server) : echo(req, res, server),
    );
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const head = await f('/x', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBeNull();
    expect(stat(lb, 'a').inFlight).toBe(0);
    const empty = await f('/empty');
    expect(empty.status).toBe(204);
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, successes: 2, failures: 0 });
  });

  it('a 500 is a failure, a 404 is not', async () => {
    const s = await startServer('a');
    s.handler = (req, res, server) => (req.url === '/500' ? respond(500) : respond(404))(req, res, server);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb, { retryOn: [] });
    expect((await get(f, '/500')).status).toBe(500);
    expect(stat(lb, 'a')).toMatchObject({ failures: 1, successes: 0 });
    expect((await get(f, '/404')).status).toBe(404);
    expect(stat(lb, 'a')).toMatchObject({ failures: 1, successes: 1, inFlight: 0 });
  });

  it('failureStatuses changes what counts as a failure (list and predicate)', async () => {
    const s = await startServer('a', (req, res, server) => respond(Number(req.url?.slice(1)))(req, res, server));
    const lb = balancer({ backends: backendsOf([s]) });
    const byList = balancedFetch(lb, { failureStatuses: [404, 429] });
    await get(byList, '/404');
    await get(byList, '/500');
    await get(byList, '/429');
    expect(stat(lb, 'a')).toMatchObject({ failures: 2, successes: 1 });
    const byPredicate = balancedFetch(lb, { failureStatuses: (status) => status === 418 });
    await get(byPredicate, '/418');
    await get(byPredicate, '/503'); // retried? one backend only: returned as it is, and not a failure
    expect(stat(lb, 'a')).toMatchObject({ failures: 3, successes: 2, inFlight: 0 });
  });

  it('feeds latencies to p2c peak-EWMA', async () => {
    const servers = await startServers(2);
    const lb = balancer({ algorithm: 'p2c', load: 'peak-ewma', backends: backendsOf(servers) });
    let clock = 0;
    // each call of the fetch clock moves it 7 ms: every attempt "takes" 7 ms
    const f = balancedFetch(lb, { now: () => (clock += 7) });
    expect(lb.stats().map((s) => s.ewmaMs)).toEqual([0, 0]);
    for (let i = 0; i < 10; i++) await get(f, '/');
    const used = lb.stats().filter((s) => s.picks > 0);
    expect(used.length).toBeGreaterThan(0);
    for (const s of used) expect(s.ewmaMs).toBeGreaterThan(0);
    // with the real clock too
    const real = balancer({ algorithm: 'p2c', load: 'peak-ewma', backends: backendsOf(servers) });
    const g = balancedFetch(real);
    for (let i = 0; i < 10; i++) await get(g, '/');
    expect(Math.max(...real.stats().map((s) => s.ewmaMs))).toBeGreaterThan(0);
  });
});

describe('retries', () => {
  it('a backend stopped mid-run fails no GET (round-robin over 3)', async () => {
    const servers = await startServers(3);
    const lb = balancer({ backends: backendsOf(servers) });
    const f = balancedFetch(lb);
    const statuses: number[] = [];
    for (let i = 0; i < 60; i++) {
      if (i === 15) await servers[1]?.stop();
      statuses.push((await get(f, `/g/${i}`)).status);
    }
    expect(statuses).toEqual(Array(60).fill(200));
    expect(servers[1]?.hits).toBe(5);
    expect(sum(hits(servers))).toBe(60);
    // every third pick after the stop went to the dead backend, failed and was retried
    expect(stat(lb, 's1').failures).toBeGreaterThanOrEqual(14);
    expect(stat(lb, 's1').successes).toBe(5);
    expect(inFlight(lb)).toBe(0);
  });

  it('passive health ejects the stopped backend', async () => {
    const servers = await startServers(3);
    const lb = balancer({
      backends: backendsOf(servers),
      health: { passive: { consecutiveFailures: 3, baseEjectionMs: 60_000 } },
    });
    const f = balancedFetch(lb);
    for (let i = 0; i < 6; i++) await get(f, '/warm');
    await servers[2]?.stop();
    let sent = 0;
    await waitFor(
      async () => {
        expect((await get(f, '/p')).status).toBe(200);
        sent++;
        return stat(lb, 's2').state === 'ejected';
      },
      { message: 's2 ejected' },
    );
    expect(stat(lb, 's2')).toMatchObject({ state: 'ejected', ejections: 1, pickable: false });
    expect(stat(lb, 's2').failures).toBe(3);
    // ejected: the next requests never try it
    const before = stat(lb, 's2').picks;
    for (let i = 0; i < 10; i++) expect((await get(f, '/after')).status).toBe(200);
    expect(stat(lb, 's2').picks).toBe(before);
    expect(sent).toBeGreaterThanOrEqual(3);
  });

  it('does not retry a POST by default; retries it with retryNonIdempotent', async () => {
    const [dead, live] = await startServers(2);
    if (dead === undefined || live === undefined) throw new Error('servers');
    await dead.stop();
    const lb = balancer({ backends: backendsOf([dead, live]) });
    const f = balancedFetch(lb);
    const outcomes = await Promise.allSettled([
      f('/post', { method: 'POST', body: 'one' }),
      f('/post', { method: 'POST', body: 'two' }),
    ]);
    const rejected = outcomes.filter((o) => o.status === 'rejected');
    expect(rejected).toHaveLength(1);
    const error = (rejected[0] as PromiseRejectedResult).reason as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.attempts.map((a) => a.backend)).toEqual(['s0']);
    expect(live.hits).toBe(1);
    for (const o of outcomes) if (o.status === 'fulfilled') await o.value.arrayBuffer();

    const g = balancedFetch(lb, { retryNonIdempotent: true });
    for (let i = 0; i < 4; i++) {
      const res = await g('/post', { method: 'POST', body: `retry-${i}` });
      expect(res.status).toBe(200);
      expect(((await res.json()) as EchoBody).body).toBe(`retry-${i}`);
    }
    expect(live.hits).toBe(5);
    expect(live.requests.every((r) => r.method === 'POST')).toBe(true);
  });

  it('never retries a ReadableStream body', async () => {
    const [dead, live] = await startServers(2);
    if (dead === undefined || live === undefined) throw new Error('servers');
    await dead.stop();
    const lb = balancer({ backends: backendsOf([dead, live]) });
    const f = balancedFetch(lb, { retryNonIdempotent: true, retries: 3 });
    const streamBody = (text: string) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(text));
          controller.close();
        },
      });
    const results: Array<string> = [];
    const errors: UpstreamError[] = [];
    for (let i = 0; i < 2; i++) {
      try {
        const res = await f('/put', { method: 'PUT', body: streamBody(`s-${i}`), duplex: 'half' } as RequestInit);
        results.push(((await res.json()) as EchoBody).body);
      } catch (error) {
        errors.push(await upstreamError(Promise.reject(error)));
      }
    }
    expect(results).toHaveLength(1);
    expect(results[0]).toMatch(/^s-[01]$/);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.attempts.map((a) => a.backend)).toEqual(['s0']);
    expect(live.hits).toBe(1);
  });

  it('retries a 503 on another backend and the caller sees 200', async () => {
    const [sick, well] = await startServers(2);
    if (sick === undefined || well === undefined) throw new Error('servers');
    sick.handler = respond(503);
    const lb = balancer({ backends: backendsOf([sick, well]) });
    const f = balancedFetch(lb);
    for (let i = 0; i < 10; i++) expect(await get(f, `/r/${i}`)).toEqual({ status: 200, server: 's1' });
    expect(sick.hits).toBeGreaterThanOrEqual(4);
    expect(well.hits).toBe(10);
    expect(stat(lb, 's0')).toMatchObject({ failures: sick.hits, successes: 0, inFlight: 0 });
    expect(stat(lb, 's1')).toMatchObject({ failures: 0, successes: 10, inFlight: 0 });
  });

  it('returns the last 503 when every backend answers 503 and the retries are spent', async () => {
    const arrivals: string[] = [];
    const servers = await startServers(3, (req, res, server) => {
      arrivals.push(server.name);
      respond(503)(req, res, server);
    });
    const lb = balancer({ backends: backendsOf(servers) });
    const f = balancedFetch(lb, { retries: 2 });
    const res = await f('/all-503');
    expect(res.status).toBe(503);
    expect(hits(servers)).toEqual([1, 1, 1]);
    // the caller gets the answer of the third (last) backend tried
    expect(arrivals).toHaveLength(3);
    expect(res.headers.get('x-server')).toBe(arrivals[2]);
    expect(await res.text()).toBe(`${arrivals[2]} 503`);
    expect(lb.stats().map((s) => [s.failures, s.inFlight])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
    // retries: 1 (default) stops after two attempts
    const g = balancedFetch(lb);
    expect((await get(g, '/again')).status).toBe(503);
    expect(sum(hits(servers))).toBe(5);
  });

  it('retries: 0 disables retries (errors and statuses)', async () => {
    const [dead, sick] = await startServers(2);
    if (dead === undefined || sick === undefined) throw new Error('servers');
    await dead.stop();
    sick.handler = respond(503);
    const lb = balancer({ backends: backendsOf([dead, sick]) });
    const f = balancedFetch(lb, { retries: 0 });
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      try {
        const r = await get(f, '/');
        outcomes.push(`${r.server}:${r.status}`);
      } catch (error) {
        const e = await upstreamError(Promise.reject(error));
        outcomes.push(`error:${e.attempts.map((a) => a.backend).join(',')}`);
      }
    }
    expect(outcomes.sort()).toEqual(['error:s0', 'error:s0', 's1:503', 's1:503']);
    expect(sick.hits).toBe(2);
  });
});

describe('errors', () => {
  it('ERR_NO_BACKEND when the pool is empty or every backend is marked down', async () => {
    const empty = balancer({ backends: [] });
    const f = balancedFetch(empty);
    const e1 = await rejection(f('/x'));
    expect(isFairpickError(e1, 'ERR_NO_BACKEND')).toBe(true);

    const servers = await startServers(2);
    const lb = balancer({ backends: backendsOf(servers), health: { passive: true } });
    const g = balancedFetch(lb);
    lb.markDown('s0');
    lb.markDown('s1');
    const e2 = await rejection(g('/x'));
    expect(isFairpickError(e2, 'ERR_NO_BACKEND')).toBe(true);
    expect(e2).not.toBeInstanceOf(UpstreamError);
    expect(hits(servers)).toEqual([0, 0]);
    expect(inFlight(lb)).toBe(0);
    lb.markUp('s1');
    expect((await get(g, '/x')).server).toBe('s1');
  });

  it('UpstreamError lists every attempt in order, with the last error as cause', async () => {
    const servers = await startServers(3);
    const ports = new Map(servers.map((s) => [String(s.port), s.name]));
    for (const s of servers) await s.stop();
    const lb = balancer({ backends: backendsOf(servers) });
    const tried: string[] = [];
    const f = balancedFetch(lb, {
      retries: 2,
      fetch: (input, init) => {
        tried.push(ports.get(new URL(String(input)).port) ?? '?');
        return globalThis.fetch(input, init);
      },
    });
    const error = await upstreamError(f('/down'));
    expect(tried).toHaveLength(3);
    expect(new Set(tried).size).toBe(3);
    expect(error.attempts.map((a) => a.backend)).toEqual(tried);
    expect(error.cause).toBe(error.attempts[2]?.error);
    expect(error.cause).toBeInstanceOf(TypeError); // fetch failed
    for (const id of tried) expect(error.message).toContain(id);
    expect(error.message).toContain('GET /down');
    expect(error.message).toContain('ECONNREFUSED');
    expect(lb.stats().map((s) => [s.failures, s.inFlight])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
  });
});

describe('timeouts and aborts', () => {
  it('timeoutMs aborts a silent backend with ERR_TIMEOUT and closes its socket', async () => {
    const s = await startServer('a', hang);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb, { timeoutMs: 100 });
    const error = await upstreamError(f('/silent'));
    expect(error.attempts).toHaveLength(1);
    const attempt = error.attempts[0];
    if (attempt === undefined) throw new Error('no attempt');
    expect(attempt.backend).toBe('a');
    expect(isFairpickError(attempt.error, 'ERR_TIMEOUT')).toBe(true);
    expect((attempt.error as FairpickError).message).toContain('100 ms');
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, failures: 1 });
    await waitFor(() => s.requestClosed(0), {
      message: 'the server sees the socket closed',
    });
  });

  it('a timed-out attempt is retried on another backend', async () => {
    const [slow, fast] = await startServers(2);
    if (slow === undefined || fast === undefined) throw new Error('servers');
    slow.handler = hang;
    const lb = balancer({ backends: backendsOf([slow, fast]) });
    // 1 s: the fast backend must always answer within it, even on a loaded machine.
    const f = balancedFetch(lb, { timeoutMs: 1000 });
    for (let i = 0; i < 2; i++) expect(await get(f, '/t')).toEqual({ status: 200, server: 's1' });
    // round-robin starts at a random backend: the slow one was tried once or twice
    expect(slow.hits).toBeGreaterThanOrEqual(1);
    expect(fast.hits).toBe(2);
    expect(stat(lb, 's0')).toMatchObject({ failures: slow.hits, successes: 0, inFlight: 0 });
    await waitFor(() => slow.requests.every((_, i) => slow.requestClosed(i)), { message: 'the slow sockets closed' });
  });

  it("the caller's abort before the headers rejects with its reason, frees the slot, counts no failure", async () => {
    const s = await startServer('a', hang);
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb, { timeoutMs: 60_000 });
    const controller = new AbortController();
    const pending = f('/wait', { signal: controller.signal });
    await waitFor(() => s.hits === 1, { message: 'the request arrived' });
    expect(stat(lb, 'a').inFlight).toBe(1);
    controller.abort();
    const error = await rejection(pending);
    expect(error).toBe(controller.signal.reason);
    expect((error as Error).name).toBe('AbortError');
    expect(stat(lb, 'a')).toMatchObject({ inFlight: 0, failures: 0, successes: 0 });
    await waitFor(() => s.requestClosed(0), { message: 'the server sees the socket closed' });

    // a custom reason is passed on as it is
    const c2 = new AbortController();
    const p2 = f('/wait', { signal: c2.signal });
    await waitFor(() => s.hits === 2, { message: 'the second request arrived' });
    const reason = new Error('user left');
    c2.abort(reason);
    expect(await rejection(p2)).toBe(reason);
    expect(inFlight(lb)).toBe(0);
    await waitFor(() => s.requestClosed(1), { message: 'the second socket closed' });
  });

  it('an already-aborted signal rejects without picking', async () => {
    const s = await startServer('a');
    const lb = balancer({ backends: backendsOf([s]) });
    const f = balancedFetch(lb);
    const reason = new Error('already gone');
    const error = await rejection(f('/never', { signal: AbortSignal.abort(reason) }));
    expect(error).toBe(reason);
    const aborted = await rejection(f(new Request('http://fairpick/never', { signal: AbortSignal.abort() })));
    expect((aborted as Error).name).toBe('AbortError');
    expect(stat(lb, 'a')).toMatchObject({ picks: 0, inFlight: 0, failures: 0 });
    expect(s.hits).toBe(0);
  });
});

describe('retry budget', () => {
  it('caps the retries at max(minPerSecond x window, percent of requests) when every backend answers 503', async () => {
    const servers = await startServers(3, respond(503));
    const lb = balancer({ backends: backendsOf(servers) });
    let clock = 1_000;
    const f = balancedFetch(lb, {
      retries: 2,
      now: () => clock,
      retryBudget: { percent: 20, minPerSecond: 1, windowMs: 10_000 },
    });
    // the floor: 1/s x 10 s = 10 retries, as long as 20% of the requests is less
    for (let i = 0; i < 20; i++) expect((await get(f, '/')).status).toBe(503);
    expect(sum(hits(servers)) - 20).toBe(10);
    // 200 requests: 20% = 40 retries in the window
    for (let i = 0; i < 180; i++) expect((await get(f, '/')).status).toBe(503);
    expect(sum(hits(servers)) - 200).toBe(40);
    // the window ages out: a new window starts with the floor again
    clock += 10_000;
    for (let i = 0; i < 20; i++) await get(f, '/');
    expect(sum(hits(servers)) - 220).toBe(50);
  });

  it('caps the retries when every backend refuses connections', async () => {
    const servers = await startServers(3);
    for (const s of servers) await s.stop();
    const lb = balancer({ backends: backendsOf(servers) });
    const clock = 5_000;
    const f = balancedFetch(lb, { retries: 2, now: () => clock });
    // defaults: 20%, 3/s over 10 s: max(30, 0.2 x 100) = 30
    let attempts = 0;
    for (let i = 0; i < 100; i++) attempts += (await upstreamError(f('/'))).attempts.length;
    expect(attempts - 100).toBe(30);
    expect(sum(lb.stats().map((s) => s.failures))).toBe(attempts);
  });

  it('retryBudget: false lets every request use all its retries', async () => {
    const servers = await startServers(3, respond(503));
    const lb = balancer({ backends: backendsOf(servers) });
    const f = balancedFetch(lb, { retries: 2, retryBudget: false, now: () => 0 });
    for (let i = 0; i < 30; i++) await get(f, '/');
    expect(hits(servers)).toEqual([30, 30, 30]);
  });
});

describe('recovery after a total outage (undici issue 4839)', () => {
  it('spreads over every upstream again once they come back', async () => {
    const servers = await startServers(3);
    const lb = balancer({
      backends: backendsOf(servers),
      health: {
        passive: { consecutiveFailures: 2, baseEjectionMs: 200, maxEjectionMs: 400, maxEjectedPercent: 100 },
      },
    });
    const f = balancedFetch(lb, { retries: 2 });
    for (let i = 0; i < 9; i++) await get(f, '/before');
    expect(hits(servers)).toEqual([3, 3, 3]);

    for (const s of servers) await s.stop();
    const failures: unknown[] = [];
    for (let i = 0; i < 12; i++) failures.push(await rejection(f('/outage')));
    for (const e of failures) {
      expect(isFairpickError(e, 'ERR_UPSTREAM') || isFairpickError(e, 'ERR_NO_BACKEND')).toBe(true);
    }
    expect(lb.stats().every((s) => s.ejections >= 1)).toBe(true);

    for (const s of servers) await s.restart();
    await waitFor(() => lb.stats().every((s) => s.state === 'healthy'), {
      message: 'every ejection ended',
    });
    for (const s of servers) s.reset();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await get(f, '/after')).status);
    expect(statuses).toEqual(Array(30).fill(200));
    expect(hits(servers)).toEqual([10, 10, 10]);
    expect(lb.stats().map((s) => s.state)).toEqual(['healthy', 'healthy', 'healthy']);
  });
});

describe('validation', () => {
  const cases: Array<[string, BalancedFetchOptions | undefined, Web[], RegExp]> = [
    ['retries -1', { retries: -1 }, [], /options\.retries/],
    ['retries 1.5', { retries: 1.5 }, [], /options\.retries/],
    ['retryOn [700]', { retryOn: [700] }, [], /options\.retryOn\[0\]/],
    ['failureStatuses ["500"]', { failureStatuses: ['500' as unknown as number] }, [], /options\.failureStatuses/],
    ['timeoutMs 0', { timeoutMs: 0 }, [], /options\.timeoutMs/],
    ['timeoutMs NaN', { timeoutMs: Number.NaN }, [], /options\.timeoutMs/],
    ["origin 'ftp://x'", { origin: 'ftp://x' }, [], /options\.origin/],
    ['origin with a path', { origin: 'http://fairpick/api' }, [], /options\.origin/],
    ['fetch not a function', { fetch: 'fetch' as unknown as typeof fetch }, [], /options\.fetch/],
    ['retryNonIdempotent "yes"', { retryNonIdempotent: 'yes' as unknown as boolean }, [], /retryNonIdempotent/],
    ['retryBudget percent 120', { retryBudget: { percent: 120 } }, [], /options\.retryBudget\.percent/],
    ['retryBudget windowMs 10', { retryBudget: { windowMs: 10 } }, [], /options\.retryBudget\.windowMs/],
    ['backend url not a url', undefined, [{ id: 'bad', url: 'not a url' }], /backend "bad" url/],
    ['backend url with a query', undefined, [{ id: 'q', url: 'http://127.0.0.1:1/?x=1' }], /backend "q" url/],
    ['backend url ftp', undefined, [{ id: 'f', url: 'ftp://127.0.0.1:1' }], /backend "f" url/],
  ];
  it.each(cases)('%s throws ERR_INVALID_ARGUMENT naming the field', (_name, options, backends, field) => {
    const lb = balancer({ backends });
    let thrown: unknown;
    try {
      balancedFetch(lb, options);
    } catch (error) {
      thrown = error;
    }
    expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((thrown as Error).message).toMatch(field);
  });

  it('rejects a non-balancer', () => {
    let thrown: unknown;
    try {
      balancedFetch({} as Balancer<Web>);
    } catch (error) {
      thrown = error;
    }
    expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((thrown as Error).message).toMatch(/\blb\b/);
  });
});

describe('injected fetch', () => {
  it('sends every attempt through the given fetch', async () => {
    const [dead, live] = await startServers(2);
    if (dead === undefined || live === undefined) throw new Error('servers');
    await dead.stop();
    const calls: Array<{ url: string; method: string | undefined }> = [];
    const lb = balancer({ backends: backendsOf([dead, live]) });
    const f = balancedFetch(lb, {
      fetch: (input, init) => {
        calls.push({ url: String(input), method: init?.method });
        return globalThis.fetch(input, init);
      },
    });
    for (let i = 0; i < 4; i++) expect((await get(f, '/via?x=1', { method: 'GET' })).status).toBe(200);
    const deadPicks = stat(lb, 's0').picks;
    expect(deadPicks).toBeGreaterThanOrEqual(1); // round-robin reaches it within 4 requests
    expect(calls.filter((c) => c.url === `${dead.url}/via?x=1`)).toHaveLength(deadPicks);
    expect(calls.filter((c) => c.url === `${live.url}/via?x=1`)).toHaveLength(4);
    expect(calls).toHaveLength(4 + deadPicks);
    expect(calls.every((c) => c.method === 'GET')).toBe(true);
    expect(live.hits).toBe(4);
    // echo is the default handler of a TestServer
    expect(live.handler).toBe(echo);
  });
});
