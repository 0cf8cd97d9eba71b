import { createHash } from 'node:crypto';
import { type IncomingMessage, request, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { displayIp, forwardedElement, requestHeaders, stripHopByHop } from '../../examples/proxy/src/headers.js';
import type { Stats } from './support/processes.js';
import { type Answer, freeTcpPort, freeUdpPort, send, until } from './support-net.js';
import { backend, cleanups, closeAll, type LogEvent, proxy, type RunningProxy } from './support-proxy.js';

afterEach(closeAll);

function accessLines(p: RunningProxy): LogEvent[] {
  return p.events.filter((e) => e.event === 'access');
}

function totalInFlight(p: RunningProxy): number {
  return p.handle.balancer.stats().reduce((sum, s) => sum + s.inFlight, 0);
}

/** A backend that answers with the request it received: method, url, headers and body. */
function echoHandler(name: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
    });
    req.on('end', () => {
      res.setHeader('x-served-by', name);
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body }),
      );
    });
  };
}

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  rawHeaders: string[];
  body: string;
}

const echoed = (answer: Answer): Echo => JSON.parse(answer.body) as Echo;

describe('proxying', () => {
  it('spreads requests round robin exactly over two backends', async () => {
    const web1 = await backend('web1');
    const web2 = await backend('web2');
    const p = await proxy({
      backends: [
        { id: 'web1', url: web1.url },
        { id: 'web2', url: web2.url },
      ],
    });
    const servedBy: string[] = [];
    for (let i = 0; i < 10; i++) {
      const answer = await send(`${p.url}/r${i}`);
      expect(answer.status).toBe(200);
      servedBy.push(String(answer.headers['x-served-by']));
    }
    expect(servedBy.filter((s) => s === 'web1')).toHaveLength(5);
    expect(servedBy.filter((s) => s === 'web2')).toHaveLength(5);
    for (let i = 1; i < servedBy.length; i++) expect(servedBy[i]).not.toBe(servedBy[i - 1]); // strict alternation
    expect(
      web1.seen
        .map((r) => r.url)
        .concat(web2.seen.map((r) => r.url))
        .sort(),
    ).toEqual(Array.from({ length: 10 }, (_, i) => `/r${i}`).sort());
  });

  it('keeps each hash key on one backend and spreads requests without a key', async () => {
    const web1 = await backend('web1');
    const web2 = await backend('web2');
    const p = await proxy({
      backends: [
        { id: 'web1', url: web1.url },
        { id: 'web2', url: web2.url },
      ],
      algorithm: 'ring-hash',
      hashKey: { source: 'header', name: 'X-User' },
    });
    const homes = new Map<string, Set<string>>();
    for (let round = 0; round < 3; round++) {
      for (let u = 0; u < 20; u++) {
        const user = `user-${u}`;
        const answer = await send(p.url, { headers: { 'x-user': user } });
        const set = homes.get(user) ?? new Set<string>();
        set.add(String(answer.headers['x-served-by']));
        homes.set(user, set);
      }
    }
    for (const [user, servers] of homes) expect([user, servers.size]).toEqual([user, 1]);
    const used = new Set([...homes.values()].flatMap((s) => [...s]));
    expect(used).toEqual(new Set(['web1', 'web2']));
    // Without the header each request gets a fresh random key: not all onto one backend.
    const keyless = new Set<string>();
    for (let i = 0; i < 40; i++) keyless.add(String((await send(p.url)).headers['x-served-by']));
    expect(keyless).toEqual(new Set(['web1', 'web2']));
  });

  it('sets X-Forwarded-For/-Proto/-Host and Forwarded, appending to what the client sent', async () => {
    const web1 = await backend('web1', echoHandler('web1'));
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const answer = await send(`${p.url}/who?x=1`, {
      headers: {
        Host: 'shop.example:8080',
        'X-Forwarded-For': '203.0.113.7',
        'X-Forwarded-Proto': 'https',
        Forwarded: 'for=203.0.113.7;proto=https',
      },
    });
    expect(answer.status).toBe(200);
    const seen = echoed(answer);
    expect(seen.url).toBe('/who?x=1');
    expect(seen.headers.host).toBe('shop.example:8080');
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('shop.example:8080');
    expect(seen.headers.forwarded).toBe(
      'for=203.0.113.7;proto=https, for=127.0.0.1;host="shop.example:8080";proto=http',
    );
    // Without forwarding headers from the client, the proxy starts the lists.
    const plain = echoed(await send(p.url));
    expect(plain.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(plain.headers.forwarded).toMatch(/^for=127\.0\.0\.1;host="127\.0\.0\.1:\d+";proto=http$/);
  });

  it('removes hop-by-hop headers in both directions, including those named in Connection', async () => {
    let backendReceived: Record<string, string | string[] | undefined> = {};
    let backendBody = '';
    const web1 = await backend('web1', (req, res) => {
      backendReceived = req.headers;
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => {
        backendBody += chunk;
      });
      req.on('end', () => {
        res.writeHead(200, [
          'Connection',
          'X-Backend-Hop',
          'X-Backend-Hop',
          'secret',
          'Keep-Alive',
          'timeout=99',
          'Proxy-Authenticate',
          'Basic realm="inner"',
          'Upgrade',
          'h2c',
          'Trailer',
          'Expires',
          'Transfer-Encoding',
          'chunked',
          'X-Kept',
          'yes',
          'Set-Cookie',
          'a=1',
          'Set-Cookie',
          'b=2',
        ]);
        res.end('ok');
      });
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const answer = await send(p.url, {
      headers: [
        'Host',
        'example.test',
        'Connection',
        'keep-alive, X-Client-Hop',
        'X-Client-Hop',
        'secret',
        'Keep-Alive',
        'timeout=5',
        'Proxy-Connection',
        'keep-alive',
        'Proxy-Authorization',
        'Basic dXNlcjpwYXNz',
        'TE',
        'trailers',
        'Trailer',
        'Expires',
        'Transfer-Encoding',
        'chunked',
        'Upgrade',
        'h2c',
        'X-End-To-End',
        'kept',
      ],
      body: 'chunked payload',
    });
    expect(answer.status).toBe(200);
    for (const name of [
      'x-client-hop',
      'keep-alive',
      'proxy-connection',
      'proxy-authorization',
      'te',
      'trailer',
      'upgrade',
    ]) {
      expect([name, backendReceived[name]]).toEqual([name, undefined]);
    }
    expect(backendReceived.connection).toBe('keep-alive'); // the proxy's own, for its pooled connection
    // The client's Transfer-Encoding is not forwarded as such: the proxy frames the body itself,
    // chunked while it is still arriving, or with a Content-Length when it has arrived whole.
    const framing = [backendReceived['transfer-encoding'], backendReceived['content-length']];
    expect([
      ['chunked', undefined],
      [undefined, String('chunked payload'.length)],
    ]).toContainEqual(framing);
    expect(backendBody).toBe('chunked payload');
    expect(backendReceived['x-end-to-end']).toBe('kept');
    for (const name of ['x-backend-hop', 'proxy-authenticate', 'trailer', 'upgrade']) {
      expect([name, answer.headers[name]]).toEqual([name, undefined]);
    }
    expect(answer.headers['keep-alive']).not.toBe('timeout=99');
    expect(String(answer.headers.connection).toLowerCase()).not.toContain('x-backend-hop');
    expect(answer.headers['x-kept']).toBe('yes');
    expect(answer.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('streams the request body: the backend sees the first chunk before the client sends the rest', async () => {
    const order: string[] = [];
    let firstArrived: () => void = () => {};
    const first = new Promise<void>((resolve) => {
      firstArrived = resolve;
    });
    const web1 = await backend('web1', (req, res) => {
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => {
        order.push(`backend got ${chunk}`);
        firstArrived();
      });
      req.on('end', () => {
        order.push('backend saw the end');
        res.end('stored');
      });
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const req = request(`${p.url}/upload`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' },
    });
    const answer = new Promise<string>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve(`${res.statusCode} ${body}`));
      });
      req.on('error', reject);
    });
    req.write('one');
    order.push('client sent one');
    await first; // a proxy that buffered the body would never get here: the client has not finished
    order.push('client sends two');
    req.end('two');
    expect(await answer).toBe('200 stored');
    expect(order).toEqual([
      'client sent one',
      'backend got one',
      'client sends two',
      'backend got two',
      'backend saw the end',
    ]);
  });

  it('streams the response body: the client gets the first chunk before the backend ends', async () => {
    const order: string[] = [];
    let finish: () => void = () => {};
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first');
      order.push('backend wrote first');
      finish = () => {
        order.push('backend ends');
        res.end('second');
      };
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    await new Promise<void>((resolve, reject) => {
      const req = request(p.url, { agent: false }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          order.push(`client got ${chunk}`);
          if (chunk === 'first') finish(); // a buffering proxy would never deliver this chunk alone
        });
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
    expect(order).toEqual(['backend wrote first', 'client got first', 'backend ends', 'client got second']);
  });
});

describe('failures', () => {
  it('retries a GET on the other backend after a connect error, but not a POST', async () => {
    const deadPort = await freeTcpPort();
    const web2 = await backend('web2', echoHandler('web2'));
    const p = await proxy({
      backends: [
        { id: 'web1', url: `http://127.0.0.1:${deadPort}` },
        { id: 'web2', url: web2.url },
      ],
      health: { passive: false },
    });
    for (let i = 0; i < 6; i++) {
      const answer = await send(`${p.url}/get${i}`);
      expect(answer.status).toBe(200);
      expect(answer.headers['x-served-by']).toBe('web2');
    }
    await until(() => accessLines(p).length === 6, 'six access lines');
    const gets = accessLines(p);
    expect(gets.every((e) => e.status === 200 && e.backend === 'web2' && e.error === undefined)).toBe(true);
    expect(gets.some((e) => e.attempts === 2)).toBe(true); // those that met web1 first
    expect(p.handle.balancer.stats()[0]?.failures).toBeGreaterThan(0);

    // Round robin alternates, so of two POSTs exactly one meets the dead backend: 502, no retry.
    const posts = [
      await send(`${p.url}/post`, { method: 'POST', body: 'a' }),
      await send(`${p.url}/post`, { method: 'POST', body: 'b' }),
    ];
    // Every attempt failed to connect: 503 (HAProxy's and Envoy's answer), not 502.
    expect(posts.map((a) => a.status).sort()).toEqual([200, 503]);
    const failed = posts.find((a) => a.status === 503);
    expect(failed?.body).toContain('503 Service Unavailable');
    expect(failed?.headers['retry-after']).toBe('1');
    expect(failed?.headers['content-type']).toBe('text/plain; charset=utf-8');
    const succeeded = posts.find((a) => a.status === 200);
    expect(echoed(succeeded as Answer).method).toBe('POST');
    expect(web2.seen.filter((r) => r.method === 'POST')).toHaveLength(1);
    await until(() => accessLines(p).length === 8, 'eight access lines');
    const postLine = accessLines(p).find((e) => e.method === 'POST' && e.status === 503);
    expect(postLine).toMatchObject({ attempts: 1, backend: null, error: 'connect-error@web1' });
    await until(() => totalInFlight(p) === 0, 'every slot released');
  });

  it('answers 503 when every attempt fails to connect, after retrying a GET elsewhere', async () => {
    const [dead1, dead2] = [await freeTcpPort(), await freeTcpPort()];
    const p = await proxy({
      backends: [
        { id: 'web1', url: `http://127.0.0.1:${dead1}` },
        { id: 'web2', url: `http://127.0.0.1:${dead2}` },
      ],
      health: { passive: false },
    });
    const answer = await send(`${p.url}/down`);
    expect([answer.status, answer.headers['retry-after']]).toEqual([503, '1']);
    expect(answer.body).toContain('503 Service Unavailable');
    await until(() => accessLines(p).length === 1, 'the access line');
    expect(accessLines(p)[0]).toMatchObject({ status: 503, backend: null, attempts: 2 });
    expect(String(accessLines(p)[0]?.error)).toMatch(/^connect-error@web[12]$/);
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'every slot released');
    expect(p.handle.balancer.stats().map((s) => s.failures)).toEqual([1, 1]);
  });

  it('retries a GET whose connection closed without a response on the other backend (empty response)', async () => {
    const web2 = await backend('web2', echoHandler('web2'));
    const closer = createNetServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.destroy()); // reads the request, answers nothing
    });
    await new Promise<void>((resolve) => closer.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => closer.close(() => resolve())));
    const closerUrl = `http://127.0.0.1:${(closer.address() as AddressInfo).port}`;
    const p = await proxy({
      backends: [
        { id: 'web1', url: closerUrl },
        { id: 'web2', url: web2.url },
      ],
      health: { passive: false },
    });
    for (let i = 0; i < 4; i++) {
      const answer = await send(`${p.url}/e${i}`);
      expect([answer.status, answer.headers['x-served-by']]).toEqual([200, 'web2']);
    }
    await until(() => accessLines(p).length === 4, 'four access lines');
    expect(accessLines(p).some((e) => e.attempts === 2 && e.backend === 'web2')).toBe(true);
    // A POST is not retried: the backend may have acted on it. 502, as the backend broke the exchange.
    const posts = [
      await send(`${p.url}/post`, { method: 'POST', body: 'a' }),
      await send(`${p.url}/post`, { method: 'POST', body: 'b' }),
    ];
    expect(posts.map((a) => a.status).sort()).toEqual([200, 502]);
    await until(() => accessLines(p).length === 6, 'six access lines');
    expect(accessLines(p).find((e) => e.status === 502)).toMatchObject({
      attempts: 1,
      backend: null,
      error: 'upstream-reset@web1',
    });
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'every slot released');
  });

  it('answers 502 when the backend answers garbage, without retrying', async () => {
    const web2 = await backend('web2');
    const garbage = createNetServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.end('this is not HTTP\r\n\r\n'));
    });
    await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => garbage.close(() => resolve())));
    const p = await proxy({
      backends: [
        { id: 'web1', url: `http://127.0.0.1:${(garbage.address() as AddressInfo).port}` },
        { id: 'web2', url: web2.url },
      ],
      health: { passive: false },
    });
    const statuses = [(await send(p.url)).status, (await send(p.url)).status].sort();
    expect(statuses).toEqual([200, 502]);
    await until(() => accessLines(p).length === 2, 'two access lines');
    expect(accessLines(p).find((e) => e.status === 502)).toMatchObject({
      attempts: 1,
      backend: null,
      error: 'upstream-error@web1',
    });
    expect(web2.seen).toHaveLength(1);
    await until(() => totalInFlight(p) === 0, 'every slot released');
  });

  it('answers 503 when no backend can be picked', async () => {
    const web1 = await backend('web1');
    const web2 = await backend('web2');
    const p = await proxy({
      backends: [
        { id: 'web1', url: web1.url },
        { id: 'web2', url: web2.url },
      ],
    });
    p.handle.balancer.markDown('web1');
    p.handle.balancer.markDown('web2');
    const answer = await send(p.url);
    expect(answer.status).toBe(503);
    expect(answer.body).toContain('503 Service Unavailable');
    expect(web1.seen.length + web2.seen.length).toBe(0);
    await until(() => accessLines(p).length === 1, 'the access line');
    expect(accessLines(p)[0]).toMatchObject({ status: 503, backend: null, attempts: 0, error: 'no-backend' });
    await until(
      () => p.events.some((e) => e.event === 'health' && e.backend === 'web2' && e.to === 'down'),
      'health events',
    );
    expect(p.events.find((e) => e.event === 'health' && e.backend === 'web1')).toMatchObject({
      from: 'healthy',
      to: 'down',
      reason: 'manual',
    });
  });

  it('answers 504 when the backend does not answer within responseMs', async () => {
    const held: ServerResponse[] = [];
    const web1 = await backend('web1', (_req, res) => {
      held.push(res); // never answered
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { responseMs: 200, drainMs: 2000 } });
    const answer = await send(p.url);
    expect(answer.status).toBe(504);
    expect(answer.body).toContain('504 Gateway Timeout');
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
    expect(p.handle.balancer.stats()[0]?.failures).toBe(1);
    expect(held).toHaveLength(1);
  });

  it('releases the slot when the client goes away before the response', async () => {
    let backendSawClose = false;
    const web1 = await backend('web1', (_req, res) => {
      res.on('close', () => {
        backendSawClose = true; // the proxy gave up on the backend request too
      });
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const req = request(p.url, { agent: false });
    req.on('error', () => {});
    req.end();
    await until(() => web1.seen.length === 1 && totalInFlight(p) === 1, 'the request at the backend');
    req.destroy();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0 && backendSawClose, 'the slot released');
    await until(() => accessLines(p).length === 1, 'the access line');
    expect(accessLines(p)[0]).toMatchObject({ status: 499, backend: null, error: 'client-aborted@web1' });
    const stats = p.handle.balancer.stats()[0];
    expect([stats?.successes, stats?.failures]).toEqual([0, 0]); // the client left: not the backend's fault
  });

  it('releases the slot when the client goes away in the middle of the response', async () => {
    let backendSawClose = false;
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200);
      res.write('part');
      res.on('close', () => {
        backendSawClose = true;
      });
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    await new Promise<void>((resolve) => {
      const req = request(p.url, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.end();
    });
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0 && backendSawClose, 'the slot released');
    await until(() => accessLines(p).length === 1, 'the access line');
    expect(accessLines(p)[0]).toMatchObject({ status: 200, backend: 'web1', error: 'client-aborted@web1' });
  });
});

describe('upgrades', () => {
  it('passes a WebSocket upgrade through and echoes bytes both ways', async () => {
    const web1 = await backend('web1');
    let upgradeHeaders: IncomingMessage['headers'] = {};
    web1.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      upgradeHeaders = req.headers;
      const accept = createHash('sha1')
        .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest('base64');
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      if (head.length > 0) socket.write(head);
      socket.on('error', () => socket.destroy());
      socket.pipe(socket);
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    const { res, socket } = await new Promise<{ res: IncomingMessage; socket: Socket }>((resolve, reject) => {
      const req = request(`${p.url}/ws`, {
        agent: false,
        headers: {
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Key': key,
          'Sec-WebSocket-Version': '13',
        },
      });
      req.on('upgrade', (upgraded: IncomingMessage, s: Socket) => resolve({ res: upgraded, socket: s }));
      req.on('response', (r) => reject(new Error(`expected an upgrade, got ${r.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(101);
    expect(res.headers['sec-websocket-accept']).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    expect(String(res.headers.upgrade).toLowerCase()).toBe('websocket');
    expect(upgradeHeaders.connection).toBe('upgrade');
    expect(upgradeHeaders.upgrade).toBe('websocket');
    expect(upgradeHeaders['x-forwarded-for']).toBe('127.0.0.1');
    const message = 'hello through the tunnel';
    const echo = await new Promise<string>((resolve) => {
      let received = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        received += chunk;
        if (received.length >= message.length) resolve(received);
      });
      socket.write(message);
    });
    expect(echo).toBe(message);
    expect(totalInFlight(p)).toBe(1); // a tunnel holds its slot while it is open
    socket.end();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the tunnel closed');
    await until(() => accessLines(p).length === 1, 'the access line');
    expect(accessLines(p)[0]).toMatchObject({ method: 'GET', path: '/ws', status: 101, backend: 'web1' });
  });
});

describe('admin server', () => {
  it('serves /stats.json, /metrics, /healthz and the HTML page', async () => {
    const web1 = await backend('web1');
    const web2 = await backend('web2', (_req, res) => {
      res.statusCode = 500;
      res.end('broken');
    });
    const p = await proxy({
      name: 'edge1',
      backends: [
        { id: 'web1', url: web1.url, weight: 2 },
        { id: 'web2', url: web2.url },
      ],
      health: { passive: false },
    });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await send(p.url)).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(4); // weight 2:1
    expect(statuses.filter((s) => s === 500)).toHaveLength(2); // a backend's 5xx is relayed as is
    await until(() => totalInFlight(p) === 0, 'slots released');

    const stats = JSON.parse((await send(`${p.handle.adminUrl}/stats.json`)).body) as Stats;
    expect(stats).toMatchObject({
      name: 'edge1',
      role: 'standalone',
      token: null,
      algorithm: 'round-robin',
      panicking: false,
    });
    expect(stats.backends.map((b) => [b.id, b.url, b.state, b.weight, b.requests, b.errors, b.inFlight])).toEqual([
      ['web1', web1.url, 'healthy', 2, 4, 0, 0],
      ['web2', web2.url, 'healthy', 1, 2, 2, 0],
    ]);

    const metrics = (await send(`${p.handle.adminUrl}/metrics`)).body;
    for (const name of [
      'fairpick_backend_up',
      'fairpick_backend_state',
      'fairpick_backend_weight',
      'fairpick_backend_effective_weight',
      'fairpick_backend_in_flight',
      'fairpick_backend_requests_total',
      'fairpick_backend_failures_total',
      'fairpick_backend_latency_ewma_seconds',
      'fairpick_backend_last_check_success',
      'fairpick_leader',
      'fairpick_fencing_token',
      'fairpick_requests_total',
    ]) {
      expect(metrics).toContain(`# HELP ${name} `);
      expect(metrics).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
    }
    expect(metrics).toContain('fairpick_backend_up{backend="web1"} 1\n');
    expect(metrics).toContain('fairpick_backend_state{backend="web2",state="healthy"} 1\n');
    expect(metrics).toContain('fairpick_backend_state{backend="web2",state="down"} 0\n');
    expect(metrics).toContain('fairpick_backend_requests_total{backend="web1"} 4\n');
    expect(metrics).toContain('fairpick_backend_failures_total{backend="web2"} 2\n');
    expect(metrics).toContain('fairpick_requests_total{code="200"} 4\n');
    expect(metrics).toContain('fairpick_requests_total{code="500"} 2\n');
    expect(metrics).toContain('fairpick_leader 1\n');

    const healthz = await send(`${p.handle.adminUrl}/healthz`);
    expect([healthz.status, JSON.parse(healthz.body)]).toEqual([200, { status: 'ok', role: 'standalone' }]);

    const page = await send(`${p.handle.adminUrl}/`);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body).toContain('<table id="backends">');
    expect(page.body).toContain('<span id="role" class="badge role-standalone">standalone</span>');
    expect(page.body).toContain('<span id="algorithm">round-robin</span>');
    expect(page.body).toMatch(
      /<tr data-backend="web2" class="state-healthy">.*<td data-field="errors" class="num">2<\/td>/,
    );
    expect(page.body).toContain("fetch('/stats.json'");
    expect((await send(`${p.handle.adminUrl}/nope`)).status).toBe(404);
  });

  it('titles the page "fairpick proxy" when the name is left at its default', async () => {
    const web1 = await backend('web1');
    const named = await proxy({ name: 'edge1', backends: [{ id: 'web1', url: web1.url }] });
    const page = (await send(`${named.handle.adminUrl}/`)).body;
    expect(page).toContain('<title>edge1 - fairpick proxy statistics</title>');
    expect(page).toContain('<h1>fairpick proxy <span id="name">edge1</span></h1>');
    const unnamed = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const plain = (await send(`${unnamed.handle.adminUrl}/`)).body;
    expect(plain).toContain('<title>fairpick proxy statistics</title>');
    expect(plain).toContain('<h1>fairpick proxy</h1>');
    expect(plain).not.toContain('proxy proxy');
  });
});

describe('lifecycle', () => {
  it('drains: stops accepting at once and lets the request in flight finish', async () => {
    let answer: () => void = () => {};
    const web1 = await backend('web1', (_req, res) => {
      answer = () => res.end('late but complete');
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { drainMs: 10_000 } });
    const url = p.url;
    const inFlight = send(url);
    await until(() => web1.seen.length === 1, 'the request at the backend');
    const closing = p.handle.close();
    expect(p.handle.listenUrl).toBeNull();
    await expect(send(url)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const healthz = await send(`${p.handle.adminUrl}/healthz`);
    expect([healthz.status, JSON.parse(healthz.body).status]).toEqual([503, 'draining']);
    answer();
    const finished = await inFlight;
    expect([finished.status, finished.body, finished.headers.connection]).toEqual([200, 'late but complete', 'close']);
    await closing;
    const names = p.events.map((e) => e.event);
    expect(names.indexOf('draining')).toBeLessThan(names.indexOf('access'));
    expect(names.at(-1)).toBe('stopped');
    expect(p.events.find((e) => e.event === 'draining')).toMatchObject({ inFlight: 1 });
  });

  it('a pair in standby mode "503": only the leader serves, and the standby takes over when it stops', async () => {
    const web1 = await backend('web1');
    const [udpA, udpB, portA, portB] = [
      await freeUdpPort(),
      await freeUdpPort(),
      await freeTcpPort(),
      await freeTcpPort(),
    ];
    const member = (name: string, priority: number, listen: number, bind: number, peer: number) =>
      proxy({
        name,
        listen: `127.0.0.1:${listen}`,
        backends: [{ id: 'web1', url: web1.url }],
        pair: {
          bind: `127.0.0.1:${bind}`,
          peers: [`127.0.0.1:${peer}`],
          priority,
          advertMs: 400, // a loaded machine's pauses must not look like a dead leader
          standby: '503',
          onElected: 'echo "$FAIRPICK_ROLE $FAIRPICK_TOKEN $FAIRPICK_NAME"',
          onDemoted: 'echo "$FAIRPICK_ROLE $FAIRPICK_TOKEN $FAIRPICK_NAME $FAIRPICK_REASON"',
        },
      });
    const a = await member('alpha', 200, portA, udpA, udpB);
    const b = await member('beta', 100, portB, udpB, udpA);
    await until(() => a.handle.role === 'leader' && b.handle.role === 'standby', 'alpha elected');
    const token = a.handle.token;
    expect(token).toBeGreaterThan(0);

    const standby = await send(b.url);
    expect([standby.status, standby.headers['retry-after']]).toEqual([503, '1']);
    expect(standby.body).toContain('standby');
    const leader = await send(a.url);
    expect([leader.status, leader.body]).toEqual([200, 'hello from web1']);
    await until(() => a.events.some((e) => e.event === 'hook'), 'the onElected hook');
    expect(a.events.find((e) => e.event === 'hook')).toMatchObject({
      hook: 'onElected',
      code: 0,
      output: `leader ${token} alpha`,
    });

    await a.handle.close(); // resigns: beta takes over without waiting for adverts to time out
    await until(() => b.handle.role === 'leader', 'beta elected');
    expect(b.handle.token).toBeGreaterThan(token as number);
    expect((await send(b.url)).status).toBe(200);
    expect(a.events.find((e) => e.event === 'role' && e.role === 'standby' && e.reason === 'stopped')).toBeDefined();
    expect(a.events.find((e) => e.event === 'hook' && e.hook === 'onDemoted')).toMatchObject({
      output: `standby ${token} alpha stopped`,
    });
  });
});

describe('header functions', () => {
  it('strips hop-by-hop headers and those Connection names, keeping case, order and repeats', () => {
    const raw = [
      'Host',
      'a',
      'Connection',
      'close, X-Foo',
      'X-Foo',
      '1',
      'x-bar',
      '2',
      'Set-Cookie',
      'a',
      'Set-Cookie',
      'b',
    ];
    expect(stripHopByHop(raw)).toEqual(['Host', 'a', 'x-bar', '2', 'Set-Cookie', 'a', 'Set-Cookie', 'b']);
    expect(stripHopByHop(['Upgrade', 'websocket', 'Connection', 'Upgrade'], true)).toEqual([
      'Upgrade',
      'websocket',
      'Connection',
      'upgrade',
    ]);
  });

  it('builds forwarded headers, quoting IPv6 and hosts that are not tokens', () => {
    expect(forwardedElement('2001:db8::1', 'example.com', 'http')).toBe(
      'for="[2001:db8::1]";host=example.com;proto=http',
    );
    expect(forwardedElement('192.0.2.1', 'example.com:8080', 'http')).toBe(
      'for=192.0.2.1;host="example.com:8080";proto=http',
    );
    expect(forwardedElement(undefined, undefined, 'http')).toBe('for=unknown;proto=http');
    expect(displayIp('::ffff:10.1.2.3')).toBe('10.1.2.3');
    const headers = requestHeaders(
      ['Host', 'h', 'X-Forwarded-For', '1.1.1.1', 'x-forwarded-for', '2.2.2.2', 'Transfer-Encoding', 'chunked'],
      { clientIp: '::1', proto: 'http', upgrade: false, chunked: true },
    );
    expect(headers).toEqual([
      'Host',
      'h',
      'X-Forwarded-For',
      '1.1.1.1, 2.2.2.2, ::1',
      'X-Forwarded-Proto',
      'http',
      'X-Forwarded-Host',
      'h',
      'Forwarded',
      'for="[::1]";host=h;proto=http',
      'Transfer-Encoding',
      'chunked',
    ]);
  });
});
