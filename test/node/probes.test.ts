import { createServer as createHttpServer, type Server } from 'node:http';
import type { Socket, Server as TcpServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isFairpickError } from '../../src/index.js';
import { httpProbe, tcpProbe } from '../../src/node/index.js';
import { freeTcpPort } from '../support/ports.js';

const servers: Array<Server | TcpServer> = [];
const sockets = new Set<Socket>();

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A real HTTP server on 127.0.0.1, port 0, answering with `handler`. */
async function http(handler: Parameters<typeof createHttpServer>[1]): Promise<string> {
  const server = createHttpServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}

/** A loopback port nothing listens on (bound, read, closed). */
/** TCP sockets and pending connects Node holds open, to check that a probe leaks nothing. */
function openSockets(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPConnectWrap').length;
}

/** Waits (polling, generous deadline) until no more sockets are open than `limit`. */
async function expectSocketsAtMost(limit: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (openSockets() > limit && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(openSockets()).toBeLessThanOrEqual(limit);
}

async function settled(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('httpProbe against real servers', () => {
  it('healthy on 200 at /health by default, and sends Connection: close', async () => {
    const seen: string[] = [];
    const url = await http((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.connection}`);
      res.end('ok');
    });
    expect(await httpProbe()({ url }, new AbortController().signal)).toBe(true);
    expect(seen).toEqual(['GET /health close']);
  });

  it('follows path, method, headers and a status range', async () => {
    const seen: string[] = [];
    const url = await http((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers['x-token']}`);
      res.statusCode = req.url === '/ready' ? 204 : 503;
      res.end();
    });
    const probe = httpProbe({ path: '/ready', method: 'HEAD', headers: { 'x-token': 't' }, expect: [204, 204] });
    expect(await probe({ url: `${url}/api/` }, new AbortController().signal)).toBe(true);
    expect(await httpProbe({ path: 'nope' })({ url: `${url}/api/` }, new AbortController().signal)).toBe(false);
    expect(seen).toEqual(['HEAD /ready t', 'GET /api/nope undefined']);
  });

  it('unhealthy on a wrong status; a predicate sees status and headers', async () => {
    const url = await http((_req, res) => {
      res.statusCode = 500;
      res.setHeader('x-state', 'draining');
      res.end('broken');
    });
    expect(await httpProbe()({ url }, new AbortController().signal)).toBe(false);
    const probe = httpProbe({ expect: (status, headers) => status === 500 && headers['x-state'] === 'draining' });
    expect(await probe({ url }, new AbortController().signal)).toBe(true);
  });

  it('a predicate that throws fails the check, and does not crash the process', async () => {
    const url = await http((_req, res) => res.end('ok'));
    const probe = httpProbe({
      expect: () => {
        throw new Error('predicate bug');
      },
    });
    expect(await probe({ url }, new AbortController().signal)).toBe(false);
  });

  it('a hanging response: aborting the signal settles it as unhealthy and frees the socket', async () => {
    const url = await http(() => {
      // never answers
    });
    const before = openSockets();
    const controller = new AbortController();
    const result = httpProbe()({ url }, controller.signal);
    await settled();
    expect(openSockets()).toBeGreaterThan(before); // the check is connected and waiting
    controller.abort(new Error('timeout'));
    expect(await result).toBe(false);
    // The client socket is gone; the server's side closes when the client's FIN arrives.
    await expectSocketsAtMost(before);
  });

  it('a refused connection is unhealthy', async () => {
    const port = await freeTcpPort();
    expect(await httpProbe()({ url: `http://127.0.0.1:${port}` }, new AbortController().signal)).toBe(false);
  });

  it('a server that closes the connection mid-check is unhealthy', async () => {
    const url = await http((req) => {
      req.socket.destroy();
    });
    expect(await httpProbe()({ url }, new AbortController().signal)).toBe(false);
  });

  it('an already aborted signal sends nothing', async () => {
    let requests = 0;
    const url = await http((_req, res) => {
      requests++;
      res.end();
    });
    const controller = new AbortController();
    controller.abort();
    expect(await httpProbe()({ url }, controller.signal)).toBe(false);
    expect(requests).toBe(0);
  });

  it('leaves no socket open after a run of checks', async () => {
    const url = await http((_req, res) => res.end('ok'));
    const before = openSockets();
    for (let i = 0; i < 20; i++) expect(await httpProbe()({ url }, new AbortController().signal)).toBe(true);
    await expectSocketsAtMost(before);
  });

  it('rejects bad options at once and a bad backend url at check time', async () => {
    expect(() => httpProbe({ path: '' })).toThrow(/options\.path must be a non-empty string/);
    expect(() => httpProbe({ method: 'get' })).toThrow(/options\.method must be an HTTP method/);
    expect(() => httpProbe({ expect: [500, 200] })).toThrow(/options\.expect must be a status range/);
    expect(() => httpProbe({ headers: { a: 1 as never } })).toThrow(/options\.headers/);
    const error = await httpProbe()({ url: 'not a url' }, new AbortController().signal).catch((e: unknown) => e);
    expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
    const ftp = await httpProbe()({ url: 'ftp://127.0.0.1' }, new AbortController().signal).catch((e: unknown) => e);
    expect((ftp as Error).message).toMatch(/backend\.url must be an absolute http: or https: URL/);
  });
});

describe('tcpProbe against real servers', () => {
  it('healthy when the port accepts, from url or from host and port', async () => {
    const url = await http((_req, res) => res.end());
    const port = Number(new URL(url).port);
    expect(await tcpProbe()({ url }, new AbortController().signal)).toBe(true);
    expect(await tcpProbe()({ host: '127.0.0.1', port }, new AbortController().signal)).toBe(true);
  });

  it('unhealthy when refused', async () => {
    const port = await freeTcpPort();
    expect(await tcpProbe()({ host: '127.0.0.1', port }, new AbortController().signal)).toBe(false);
  });

  it('leaves no socket open', async () => {
    const url = await http((_req, res) => res.end());
    const before = openSockets();
    for (let i = 0; i < 20; i++) expect(await tcpProbe()({ url }, new AbortController().signal)).toBe(true);
    await expectSocketsAtMost(before);
  });

  it('a backend without an address rejects with ERR_INVALID_ARGUMENT', async () => {
    const error = await tcpProbe()({ url: 'nonsense' }, new AbortController().signal).catch((e: unknown) => e);
    expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
  });
});
